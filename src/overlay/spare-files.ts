import fs from 'node:fs'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import * as sys from '../sys/index.js'
import { S_IFREG } from './mode.js'

const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants
/** How a file that must not exist yet is opened for writing. */
const NEW_FILE = O_WRONLY | O_CREAT | O_EXCL

/** Who a file belongs to. */
export interface Owner {
  uid: number
  gid: number
}

/** A spare ready to fill: its owner and inode number, which a copy-up then need not ask for. */
export interface Spare {
  path: string
  owner: Owner
  ino: number
}

/**
 * Spares are made only once the mount has served nothing for this long: during a burst of copy-ups,
 * one long copy, or any other run of requests, a background create would only take CPU from them.
 */
const IDLE_MS = 20

/**
 * Empty regular files made ahead of need, for copy-ups to fill. Allocating an inode is the
 * dearest step of a small copy-up: ext4 scans its inode bitmaps, and without a journal it also
 * reads every inode freed in the last minute to skip it (hundreds of microseconds after a large
 * `rm -rf`). A copy-up takes a ready file instead, and new ones are made in the background once
 * copy-ups pause. Spares are empty files of the server's, mode 0600, no xattrs, in a directory
 * of the work dir that kernel overlayfs ignores; they outlive the mount and are found again at
 * the next, so a remount frees no inodes to scan past. A burst of copy-ups longer than the
 * supply pays the allocation as it did before.
 */
export class SpareFiles {
  private readonly ready: Spare[] = []
  private refilling = false
  private timer: NodeJS.Timeout | undefined
  private lastActive = 0
  /** Copy-ups under way. */
  private copying = 0
  private closed = false
  private readonly prefix = randomBytes(4).toString('hex')
  private counter = 0

  constructor (
    private readonly dir: string,
    private readonly supply: number,
    private readonly log: Logger
  ) {}

  /**
   * Adopts the spares an earlier mount left. A copy-up cut short by a crash fills its spare in
   * place, so only what still looks exactly like a new spare is kept; anything else goes.
   */
  load (): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    for (const name of fs.readdirSync(this.dir)) {
      const path = `${this.dir}/${name}`
      const st = sys.lstat(path)
      if (st.mode === (S_IFREG | 0o600) && st.size === 0 && st.nlink === 1 && st.uid === process.geteuid?.() &&
        sys.llistxattr(path).length === 0) this.ready.push({ path, owner: { uid: st.uid, gid: st.gid }, ino: st.ino })
      else fs.rmSync(path, { recursive: true, force: true })
    }
    this.refill()
  }

  /**
   * An empty file that is the caller's to fill and rename away. When none is ready, only a fresh
   * name in the same directory: the caller creates the file with its first open.
   */
  take (): Spare | { path: string, owner?: undefined, ino?: undefined } {
    return this.ready.pop() ?? { path: this.nextName() }
  }

  /** A copy-up begins: no spare is made until every copy-up has ended and a pause followed. */
  begin (): void {
    this.copying++
  }

  end (): void {
    this.copying--
    this.busy()
    this.refill()
  }

  /** A request is being served: spares wait for the next pause. */
  busy (): void {
    this.lastActive = performance.now()
  }

  private nextName (): string {
    return `${this.dir}/${this.prefix}-${(this.counter++).toString(36)}`
  }

  /** Stops making spares; one being made may still land, as a spare for the next mount. */
  close (): void {
    this.closed = true
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private refill (wait = IDLE_MS): void {
    if (this.closed || this.refilling || this.timer !== undefined || this.copying > 0 || this.ready.length >= this.supply) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      const quiet = performance.now() - this.lastActive
      if (quiet < IDLE_MS) {
        this.refill(IDLE_MS - quiet)
        return
      }
      this.refilling = true
      this.fill()
        .catch(err => this.log.warn({ err }, 'could not make spare files; copy-ups make their own'))
        .finally(() => {
          this.refilling = false
          this.refill()
        })
    }, wait)
    this.timer.unref()
  }

  /** Makes spares until there are enough or requests resume. */
  private async fill (): Promise<void> {
    while (!this.closed && this.ready.length < this.supply && this.copying === 0 && performance.now() - this.lastActive >= IDLE_MS) {
      const path = this.nextName()
      const file = await fs.promises.open(path, NEW_FILE, 0o600)
      try {
        const { uid, gid, ino } = await file.stat()
        this.ready.push({ path, owner: { uid, gid }, ino })
      } finally {
        await file.close()
      }
    }
  }
}
