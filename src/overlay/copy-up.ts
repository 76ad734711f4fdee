import fs from 'node:fs'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import * as sys from '../sys/index.js'
import type { Stat } from '../sys/index.js'
import type { Timespec } from '../layers/entry.js'
import { lowerIno } from './attr.js'
import { type IndexEntry, type LowerIndex, join } from './lower-index.js'
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG } from './mode.js'
import { InodeMap } from './inode-map.js'
import { lowerDataOf, lowerDataPath } from './materialize.js'
import { SpareFiles, type Owner } from './spare-files.js'
import { type Upper, baseName, isRedirect, parentOf } from './upper.js'

/**
 * How much of a file a change needs in the upper: everything, nothing of its data (it is about
 * to be truncated to zero), or only its metadata (chmod, chown, utimens, xattrs, a rename or a
 * link) when metacopy is on, the data following on the first data write.
 */
export type CopyNeed = 'data' | 'none' | 'meta'

const { O_RDWR, O_CREAT, O_EXCL } = fs.constants

/**
 * Enough ready files for a burst of small copy-ups: a package upgrade or a `git checkout` in a
 * lower tree rewrites hundreds of files at once. 64 ran dry in the benchmark's burst of 100, whose
 * last third then paid the allocation (2-4x the latency of the rest after an `rm -rf`). A spare
 * is an empty inode, made while the mount is idle.
 */
export const SPARE_SUPPLY = 256

/**
 * Copies lower names into the upper on their first modification. Parents go first, top-down;
 * every node is built in the work directory (a regular file in a spare, see SpareFiles) with its
 * type, owner, mode, times, xattrs, symlink target, device number and holes, then renamed into
 * place, so a crash leaves either the lower file showing or the complete copy, never a partial
 * one.
 */
export class CopyUp {
  private readonly inflight = new Map<string, Promise<unknown>>()
  /** Upper inode → the lower inode number the merged view showed before the copy-up. */
  readonly inoOf: InodeMap
  /**
   * Upper inodes known to hold their whole data. A metadata-only copy is asked again each time:
   * once it is removed, its inode number may come back as a new file, which would then read the
   * lower data (a file made over a removed copy's whiteout got its number, and showed the lower
   * file's bytes). Its own copy-up is the only way a known whole inode becomes metadata-only.
   */
  private readonly whole = new Set<number>()
  private readonly spares: SpareFiles
  private readonly reflink = { supported: true }

  constructor (
    private readonly lower: LowerIndex,
    private readonly upper: Upper,
    private readonly log: Logger,
    /** Kernel overlayfs's `metacopy=on`, in its on-disk format. */
    private readonly metacopy: boolean,
    /** Not a volatile mount: what the work dir keeps for the next mount is synced (see InodeMap). */
    durable: boolean
  ) {
    this.inoOf = new InodeMap(upper.inodeLog, log, durable)
    this.spares = new SpareFiles(upper.spareDir, SPARE_SUPPLY, log)
  }

  /** Called once before the mount answers. */
  load (): void {
    this.inoOf.load()
    this.spares.load()
  }

  /** A request is being served (see SpareFiles). */
  busy (): void {
    this.spares.busy()
  }

  /** The mount is going away: nothing more may be written into the work dir. */
  close (): void {
    this.spares.close()
    this.inoOf.compact()
  }

  /**
   * Makes `path` exist in the upper with what `need` asks of it. Concurrent callers for one path
   * share one copy-up. `seen`: what the caller found in the upper at `path` in the same turn,
   * nothing awaited since, which saves a second look when no copy-up of it is under way.
   *
   * `keep`: the caller is about to open the file for reading and writing. When this call made
   * a regular file, it returns the descriptor it filled (O_RDWR, the caller's to close), which
   * saves a close, an open and its walk of the path.
   */
  async file (path: string, need: CopyNeed = 'data', seen?: { upper: Stat | undefined }, keep = false): Promise<number | undefined> {
    let st: Stat | undefined
    if (seen !== undefined && !this.inflight.has(path)) {
      st = seen.upper
    } else {
      await this.settle(path)
      st = this.upper.stat(path)
    }
    if (st !== undefined && !this.upper.isWhiteout(st)) {
      if (need !== 'meta' && this.isMetacopy(path, st)) {
        const real = this.upper.real(path)
        await this.track(path, async () => await this.fill(real, need === 'data' ? this.lowerDataPath(path) : undefined, st))
      }
      return undefined
    }
    const entry = this.lower.lookup(this.upper.lowerPath(path))
    if (entry === undefined) throw new StrataError('ENOENT', `${path}: not in the lower layers`)
    if ((entry.attr.mode & S_IFMT) === S_IFDIR) {
      this.dirs(path)
      return undefined
    }
    // As the kernel, an empty file too is copied as metadata only.
    const how = need === 'meta' && !(this.metacopy && (entry.attr.mode & S_IFMT) === S_IFREG) ? 'data' : need
    return await this.track(path, () => this.node(path, entry, how, keep))
  }

  /** Whether the upper file at `path` is a metadata-only copy this mount follows. */
  isMetacopy (path: string, st: Stat): boolean {
    return this.metacopy && this.marked(path, st)
  }

  /**
   * As the kernel, a mount without metacopy does not follow a metadata-only copy (EPERM, where
   * the copy's own bytes, none, would show), and one with it does not follow an invalid redirect
   * (EINVAL).
   */
  checkFollowed (path: string, st: Stat): void {
    if (!this.marked(path, st)) return
    if (!this.metacopy) throw new StrataError('EPERM', `${path}: a metadata-only copy, which a mount without metacopy=on does not follow`)
    const redirect = sys.lgetxattr(this.upper.real(path), this.upper.xattrs.redirect)?.toString()
    if (redirect !== undefined && !isRedirect(redirect)) throw new StrataError('EINVAL', `${path}: invalid redirect ${JSON.stringify(redirect)}`)
  }

  /** Whether the upper file at `path` carries the metacopy marker (see `whole`). */
  private marked (path: string, st: Stat): boolean {
    if ((st.mode & S_IFMT) !== S_IFREG || this.whole.has(st.ino)) return false
    const meta = sys.lgetxattr(this.upper.real(path), this.upper.xattrs.metacopy) !== undefined
    if (!meta) this.whole.add(st.ino)
    return meta
  }

  /** A regular file made anew in the upper holds its whole data, whatever its inode number held before. */
  made (ino: number): void {
    this.whole.add(ino)
  }

  /**
   * Before a rename or a link moves the metadata-only copy at `path`, records where its data is,
   * as kernel overlayfs does (ovl_set_redirect): its name while it stays in its directory, else its
   * absolute path. A redirect it has is kept when it still holds: always, if absolute.
   */
  redirectBeforeMove (path: string, samedir: boolean): void {
    const st = this.upper.stat(path)
    if (st === undefined || !this.isMetacopy(path, st)) return
    const real = this.upper.real(path)
    const current = sys.lgetxattr(real, this.upper.xattrs.redirect)?.toString()
    if (current !== undefined && (samedir || current.startsWith('/'))) return
    const name = current ?? baseName(path)
    sys.lsetxattr(real, this.upper.xattrs.redirect, Buffer.from(samedir ? name : join(parentOf(path), name)))
  }

  /** The lower file holding the data of the metadata-only copy at `path`, if there is one (see lowerDataOf). */
  lowerData (path: string): { entry: IndexEntry, real: string } | undefined {
    return lowerDataOf(this.lower, this.upper.lowerPath(path), this.upper.real(path), this.upper.xattrs)
  }

  /** lowerData's file, which must exist. */
  lowerDataPath (path: string): string {
    return lowerDataPath(this.lower, this.upper.lowerPath(path), this.upper.real(path), this.upper.xattrs)
  }

  /**
   * Gives the metadata-only copy at `real` its data, in place, from the lower file `from` (none
   * when it is about to be truncated to zero): the xattr goes last, so until the copy is
   * whole, readers (and a crash) still see the lower data. Its times stay those it showed. A
   * copy that fails (a full disk) gives back the blocks it had filled, as a hole that keeps the
   * size the file shows: its data is still the lower's, and they would keep the disk full. Kernel
   * overlayfs keeps them. A filesystem that cannot punch holes keeps them too.
   */
  async fill (real: string, from: string | undefined, st: Stat): Promise<void> {
    if (from !== undefined) {
      const to = fs.openSync(real, fs.constants.O_WRONLY)
      try {
        await this.copyInto(from, to, st.size, false)
      } catch (err) {
        try {
          sys.fallocate(to, sys.FALLOC_FL_PUNCH_HOLE | sys.FALLOC_FL_KEEP_SIZE, 0, st.size)
        } catch {}
        throw err
      } finally {
        fs.closeSync(to)
        sys.lutimens(real, st.atime, st.mtime)
      }
    }
    sys.lremovexattr(real, this.upper.xattrs.metacopy)
    this.whole.add(st.ino)
  }

  private async track<T> (path: string, run: () => Promise<T>): Promise<T> {
    this.spares.begin()
    try {
      const job = run()
      this.inflight.set(path, job)
      return await job
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
    const entry = this.lower.lookup(this.upper.lowerPath(path))
    if (entry === undefined || (entry.attr.mode & S_IFMT) !== S_IFDIR) {
      throw new StrataError('ENOENT', `${path}: no lower directory to copy up`)
    }
    const tmp = this.upper.tmpName()
    fs.mkdirSync(tmp, { mode: 0o700 })
    this.finish(path, entry, tmp, byPath(tmp))
    this.upper.noteDir(path, false)
  }

  private async node (path: string, entry: IndexEntry, need: CopyNeed, keep: boolean): Promise<number | undefined> {
    this.dirs(parentOf(path))
    const type = entry.attr.mode & S_IFMT
    let kept: number | undefined
    if (type === S_IFREG) {
      kept = await this.regular(path, entry, need, keep)
    } else {
      const tmp = this.upper.tmpName()
      try {
        if (type === S_IFLNK) fs.symlinkSync(entry.target ?? fs.readlinkSync(this.lower.realPath(this.upper.lowerPath(path), entry)), tmp)
        else sys.mknod(tmp, type, entry.attr.rdev)
        this.finish(path, entry, tmp, byPath(tmp))
      } catch (err) {
        fs.rmSync(tmp, { force: true })
        throw err
      }
    }
    this.log.debug({ path, need }, 'copied up')
    return kept
  }

  /**
   * A regular file is filled in a spare (or a new file) and given its metadata through one
   * descriptor, which walks no path; with `keep`, that descriptor is returned open.
   */
  private async regular (path: string, entry: IndexEntry, need: CopyNeed, keep: boolean): Promise<number | undefined> {
    const { size, blocks } = entry.attr
    const spare = this.spares.take()
    let fd = -1
    try {
      fd = fs.openSync(spare.path, spare.owner === undefined ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0o600)
      if (need === 'meta') {
        // The kernel's metacopy format: the full size, no data, the marker xattr.
        fs.ftruncateSync(fd, size)
        sys.fsetxattr(fd, this.upper.xattrs.metacopy, Buffer.alloc(0))
      } else if (need === 'data' && size > 0) {
        await this.copyInto(this.lower.realPath(this.upper.lowerPath(path), entry), fd, size, blocks * 512 >= size)
      }
      const ino = this.finish(path, entry, spare.path, byFd(fd, spare.owner, spare.ino))
      if (need === 'meta') this.whole.delete(ino)
      else this.whole.add(ino)
      if (!keep) return undefined
      const kept = fd
      fd = -1
      return kept
    } catch (err) {
      fs.rmSync(spare.path, { force: true })
      throw err
    } finally {
      if (fd >= 0) fs.closeSync(fd)
    }
  }

  /** Copies `size` bytes of `src` into `to`, both from offset 0; `dense` when `src` has no holes. */
  private async copyInto (src: string, to: number, size: number, dense: boolean): Promise<void> {
    const from = fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NOATIME)
    try {
      await sys.copyData(from, to, size, { reflink: this.reflink, dense })
    } finally {
      fs.closeSync(from)
    }
  }

  /** Gives the node built at `tmp` the lower entry's metadata, renames it to `path` in the upper: its inode. */
  private finish (path: string, entry: IndexEntry, tmp: string, node: Building): number {
    const { attr } = entry
    const src = this.lower.realPath(this.upper.lowerPath(path), entry)
    for (const name of sys.llistxattr(src)) {
      if (this.upper.xattrs.isPrivate(name)) continue
      const value = sys.lgetxattr(src, name)
      if (value !== undefined) node.setxattr(name, value)
    }
    // chown clears setuid/setgid, so the mode comes after it.
    if (node.owner?.uid !== attr.uid || node.owner.gid !== attr.gid) node.chown(attr.uid, attr.gid)
    if ((attr.mode & S_IFMT) !== S_IFLNK) node.chmod(attr.mode & 0o7777)
    node.utimens(attr.atime, attr.mtime)
    const ino = node.ino()
    // The parent's times are the lower's, and a copy-up is no change the merged view should show.
    const parent = this.upper.real(parentOf(path))
    const pst = sys.lstat(parent)
    fs.renameSync(tmp, this.upper.real(path))
    sys.lutimens(parent, pst.atime, pst.mtime)
    this.inoOf.set(ino, lowerIno(entry.layer, attr.ino))
    return ino
  }
}

/**
 * A node being built in the work dir, and whom it belongs to when that is known. A symlink or a
 * device node cannot be opened for its metadata, so those are set by path; a regular file's
 * through the descriptor it was filled by.
 */
interface Building {
  owner: Owner | undefined
  setxattr (name: string, value: Buffer): void
  chown (uid: number, gid: number): void
  chmod (mode: number): void
  utimens (atime: Timespec, mtime: Timespec): void
  ino (): number
}

/** Directories, symlinks and device nodes: built by path, owner unknown. */
function byPath (path: string): Building {
  return {
    owner: undefined,
    setxattr: (name, value) => sys.lsetxattr(path, name, value),
    chown: (uid, gid) => fs.lchownSync(path, uid, gid),
    chmod: mode => fs.chmodSync(path, mode),
    utimens: (atime, mtime) => sys.lutimens(path, atime, mtime),
    ino: () => sys.lstat(path).ino
  }
}

/** A regular file, through the descriptor it was filled by; a spare's owner and inode are known. */
function byFd (fd: number, owner: Owner | undefined, ino: number | undefined): Building {
  return {
    owner,
    setxattr: (name, value) => sys.fsetxattr(fd, name, value),
    chown: (uid, gid) => fs.fchownSync(fd, uid, gid),
    chmod: mode => fs.fchmodSync(fd, mode),
    utimens: (atime, mtime) => sys.futimens(fd, atime, mtime),
    ino: () => ino ?? sys.fstat(fd).ino
  }
}
