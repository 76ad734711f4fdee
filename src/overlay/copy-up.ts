import fs from 'node:fs'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import * as sys from '../sys/index.js'
import type { Stat } from '../sys/index.js'
import { lowerIno } from './attr.js'
import type { IndexEntry, LowerIndex } from './lower-index.js'
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG } from './mode.js'
import { InodeMap } from './inode-map.js'
import { lowerDataPath } from './materialize.js'
import { NEW_FILE, SpareFiles } from './spare-files.js'
import { type Upper, isPrivateXattr, parentOf } from './upper.js'

/**
 * How much of a file a change needs in the upper: everything, nothing of its data (it is about
 * to be truncated to zero), or only its metadata (chmod, chown, utimens, xattrs) when metacopy is
 * on, the data following on the first data write.
 */
export type CopyNeed = 'data' | 'none' | 'meta'

export const METACOPY_XATTR = 'trusted.overlay.metacopy'

/** Enough ready files for a burst of small copy-ups (`git checkout`, `sed -i` over a tree). */
const SPARE_SUPPLY = 64

/**
 * Copies lower names into the upper on their first modification. Parents go first, top-down;
 * every node is built in the work directory (a regular file in a spare, see SpareFiles) with its
 * type, owner, mode, times, xattrs, symlink target, device number and holes, then renamed into
 * place, so a crash leaves either the lower file showing or the complete copy, never a partial
 * one.
 */
export class CopyUp {
  private readonly inflight = new Map<string, Promise<void>>()
  /** Upper inode → the lower inode number the merged view showed before the copy-up. */
  readonly inoOf: InodeMap
  /** Upper inode → whether it is a metadata-only copy whose data is still the lower file's. */
  private readonly metaOnly = new Map<number, boolean>()
  private readonly spares: SpareFiles
  private readonly reflink = { supported: true }

  constructor (
    private readonly lower: LowerIndex,
    private readonly upper: Upper,
    private readonly log: Logger,
    /** Kernel overlayfs's `metacopy=on`, in its on-disk format. */
    private readonly metacopy: boolean
  ) {
    this.inoOf = new InodeMap(upper.inodeLog)
    this.spares = new SpareFiles(upper.spareDir, SPARE_SUPPLY, log)
  }

  /** Called once before the mount answers. */
  load (): void {
    this.inoOf.load()
    this.spares.load()
  }

  /** The mount is going away: nothing more may be written into the work dir. */
  close (): void {
    this.spares.close()
    this.inoOf.compact()
  }

  /**
   * Makes `path` exist in the upper with what `need` asks of it. Concurrent callers for one path
   * share one copy-up.
   */
  async file (path: string, need: CopyNeed = 'data'): Promise<void> {
    await this.settle(path)
    const st = this.upper.stat(path)
    if (st !== undefined && !this.upper.isWhiteout(st)) {
      if (need !== 'meta' && this.isMetacopy(path, st)) await this.track(path, () => this.completeData(path, st, need === 'data'))
      return
    }
    const entry = this.lower.lookup(path)
    if (entry === undefined) throw new StrataError('ENOENT', `${path}: not in the lower layers`)
    if ((entry.attr.mode & S_IFMT) === S_IFDIR) {
      this.dirs(path)
      return
    }
    const how = need === 'meta' && !(this.metacopy && (entry.attr.mode & S_IFMT) === S_IFREG && entry.attr.size > 0) ? 'data' : need
    await this.track(path, () => this.node(path, entry, how))
  }

  /** Whether the upper file at `path` is a metadata-only copy, reading its xattr once per inode. */
  isMetacopy (path: string, st: Stat): boolean {
    if (!this.metacopy || (st.mode & S_IFMT) !== S_IFREG) return false
    let known = this.metaOnly.get(st.ino)
    if (known === undefined) {
      known = sys.lgetxattr(this.upper.real(path), METACOPY_XATTR) !== undefined
      this.metaOnly.set(st.ino, known)
    }
    return known
  }

  /**
   * Gives a metadata-only copy its data, in place: the xattr goes last, so until the copy is
   * whole, readers (and a crash) still see the lower data. Its times stay those it showed.
   */
  private async completeData (path: string, st: Stat, data: boolean): Promise<void> {
    const real = this.upper.real(path)
    if (data) {
      await this.copyInto(lowerDataPath(this.lower, path), real, st.size, false, fs.constants.O_WRONLY)
      sys.lutimens(real, st.atime, st.mtime)
    }
    sys.lremovexattr(real, METACOPY_XATTR)
    this.metaOnly.set(st.ino, false)
  }

  private async track (path: string, run: () => Promise<void>): Promise<void> {
    this.spares.begin()
    try {
      const job = run()
      this.inflight.set(path, job)
      await job
    } finally {
      this.inflight.delete(path)
      this.spares.end()
    }
  }

  /** Waits until no copy-up of `path` is running, so a change cannot be undone by its rename. */
  async settle (path: string): Promise<void> {
    for (;;) {
      const pending = this.inflight.get(path)
      if (pending === undefined) return
      await pending.catch(() => undefined)
    }
  }

  /** Makes the directory `path` and all its parents exist in the upper, top-down. */
  dirs (path: string): void {
    if (this.upper.dirAt(path) !== null) return
    if (path !== '/') this.dirs(parentOf(path))
    const entry = this.lower.lookup(path)
    if (entry === undefined || (entry.attr.mode & S_IFMT) !== S_IFDIR) {
      throw new StrataError('ENOENT', `${path}: no lower directory to copy up`)
    }
    const tmp = this.upper.tmpName()
    fs.mkdirSync(tmp, { mode: 0o700 })
    this.finish(path, entry, tmp)
    this.upper.noteDir(path, false)
  }

  private async node (path: string, entry: IndexEntry, need: CopyNeed): Promise<void> {
    this.dirs(parentOf(path))
    const src = this.lower.realPath(path, entry)
    const type = entry.attr.mode & S_IFMT
    const spare = type === S_IFREG ? this.spares.take() : undefined
    const tmp = spare?.path ?? this.upper.tmpName()
    // Without a ready spare, the regular file is made by its first open here.
    const flags = spare?.made === false ? NEW_FILE : fs.constants.O_WRONLY
    try {
      if (type === S_IFREG && need === 'meta') {
        // The kernel's metacopy format: the full size, no data, the marker xattr.
        if (spare?.made === false) fs.closeSync(fs.openSync(tmp, flags, 0o600))
        sys.truncate(tmp, entry.attr.size)
        sys.lsetxattr(tmp, METACOPY_XATTR, Buffer.alloc(0))
      } else if (type === S_IFREG) {
        if (need === 'data' && entry.attr.size > 0) {
          await this.copyInto(src, tmp, entry.attr.size, entry.attr.blocks * 512 >= entry.attr.size, flags)
        } else if (spare?.made === false) {
          fs.closeSync(fs.openSync(tmp, flags, 0o600))
        }
      } else if (type === S_IFLNK) {
        fs.symlinkSync(entry.target ?? fs.readlinkSync(src), tmp)
      } else {
        sys.mknod(tmp, entry.attr.mode & S_IFMT, entry.attr.rdev)
      }
      const ino = this.finish(path, entry, tmp)
      this.metaOnly.set(ino, type === S_IFREG && need === 'meta')
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      throw err
    }
    this.log.debug({ path, need }, 'copied up')
  }

  /**
   * Copies `size` bytes of `src` into `dst`, opened with `flags` (made by it with NEW_FILE);
   * `dense` when `src` has no holes.
   */
  private async copyInto (src: string, dst: string, size: number, dense: boolean, flags: number): Promise<void> {
    const from = fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NOATIME)
    try {
      const to = fs.openSync(dst, flags, 0o600)
      try {
        await sys.copyData(from, to, size, { reflink: this.reflink, dense })
      } finally {
        fs.closeSync(to)
      }
    } finally {
      fs.closeSync(from)
    }
  }

  /** Gives `tmp` the lower entry's metadata, renames it to `path` in the upper: its inode. */
  private finish (path: string, entry: IndexEntry, tmp: string): number {
    const { attr } = entry
    const src = this.lower.realPath(path, entry)
    for (const name of sys.llistxattr(src)) {
      if (isPrivateXattr(name)) continue
      const value = sys.lgetxattr(src, name)
      if (value !== undefined) sys.lsetxattr(tmp, name, value)
    }
    // chown clears setuid/setgid, so the mode comes after it.
    fs.lchownSync(tmp, attr.uid, attr.gid)
    if ((attr.mode & S_IFMT) !== S_IFLNK) fs.chmodSync(tmp, attr.mode & 0o7777)
    sys.lutimens(tmp, attr.atime, attr.mtime)
    // The parent's times are the lower's, and a copy-up is no change the merged view should show.
    const parent = this.upper.real(parentOf(path))
    const pst = sys.lstat(parent)
    fs.renameSync(tmp, this.upper.real(path))
    sys.lutimens(parent, pst.atime, pst.mtime)
    const st = sys.lstat(this.upper.real(path))
    this.inoOf.set(st.ino, lowerIno(entry.layer, attr.ino))
    return st.ino
  }
}
