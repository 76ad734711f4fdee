import fs from 'node:fs'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import * as sys from '../sys/index.js'
import { lowerIno } from './attr.js'
import type { IndexEntry, LowerIndex } from './lower-index.js'
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG } from './mode.js'
import { type Upper, isPrivateXattr, parentOf } from './upper.js'

/**
 * Copies lower names into the upper on their first modification. Parents go first, top-down;
 * every node is built under a temporary name in the work directory with its type, owner, mode,
 * times, xattrs, symlink target, device number and holes, then renamed into place, so a crash
 * leaves either the lower file showing or the complete copy, never a partial one.
 */
export class CopyUp {
  private readonly inflight = new Map<string, Promise<void>>()
  /** Upper inode → the lower inode number the merged view showed before the copy-up. */
  readonly inoOf = new Map<number, number>()

  constructor (
    private readonly lower: LowerIndex,
    private readonly upper: Upper,
    private readonly log: Logger
  ) {}

  /**
   * Makes `path` exist in the upper. `data: false` skips the file's data for callers that are
   * about to truncate it to zero anyway. Concurrent callers for one path share one copy-up.
   */
  async file (path: string, data = true): Promise<void> {
    await this.settle(path)
    const st = this.upper.stat(path)
    if (st !== undefined && !this.upper.isWhiteout(st)) return
    const entry = this.lower.lookup(path)
    if (entry === undefined) throw new StrataError('ENOENT', `${path}: not in the lower layers`)
    if ((entry.attr.mode & S_IFMT) === S_IFDIR) {
      this.dirs(path)
      return
    }
    const job = this.node(path, entry, data)
    this.inflight.set(path, job)
    try {
      await job
    } finally {
      this.inflight.delete(path)
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

  private async node (path: string, entry: IndexEntry, data: boolean): Promise<void> {
    this.dirs(parentOf(path))
    const src = this.lower.realPath(path, entry)
    const tmp = this.upper.tmpName()
    const type = entry.attr.mode & S_IFMT
    try {
      if (type === S_IFREG) {
        await copyFile(src, tmp, data ? entry.attr.size : 0)
      } else if (type === S_IFLNK) {
        fs.symlinkSync(entry.target ?? fs.readlinkSync(src), tmp)
      } else {
        sys.mknod(tmp, entry.attr.mode & S_IFMT, entry.attr.rdev)
      }
      this.finish(path, entry, tmp)
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      throw err
    }
    this.log.debug({ path, data }, 'copied up')
  }

  /** Gives `tmp` the lower entry's metadata, then renames it to `path` in the upper. */
  private finish (path: string, entry: IndexEntry, tmp: string): void {
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
  }
}

async function copyFile (src: string, dst: string, size: number): Promise<void> {
  const from = fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NOATIME)
  try {
    const to = fs.openSync(dst, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600)
    try {
      if (size > 0) await sys.copyData(from, to, size)
    } finally {
      fs.closeSync(to)
    }
  } finally {
    fs.closeSync(from)
  }
}
