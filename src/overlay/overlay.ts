import fs from 'node:fs'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import * as sys from '../sys/index.js'
import type { Stat } from '../sys/index.js'
import type { Timespec } from '../layers/entry.js'
import { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { type Attr, type Caller, lowerIno, toAttr } from './attr.js'
import { CopyUp, type CopyNeed } from './copy-up.js'
import { type IndexEntry, type LowerIndex, join } from './lower-index.js'
import { S_ISGID, isDirMode, isLinkMode } from './mode.js'
import { Upper, baseName, parentOf } from './upper.js'

export interface OverlayOptions {
  lower: LowerIndex
  /** Without an upper the view is read-only and every change answers EROFS. */
  upper?: { upperDir: string; workDir: string }
  /** Copy up metadata only on chmod/chown/utimens/xattr changes, as kernel `metacopy=on`. */
  metacopy?: boolean
  /** The names of the overlay's own xattrs in its layers: trusted (the default) or user (`userxattr`). */
  xattrs?: OverlayXattrs
  /**
   * Kernel `volatile`: fsync and fdatasync return at once and O_SYNC/O_DSYNC are dropped, for
   * an upper that is thrown away rather than recovered after a crash (podman's `--rm` containers).
   */
  volatile?: boolean
  log: Logger
}

/** What one name of the merged view is made of. */
interface Resolved {
  attr: Attr
  /** The upper's node, when the upper has one (never a whiteout). */
  upper?: Stat
  /** The lower entry the name shows, when it is lower-only or a merged directory. */
  lower?: IndexEntry
  /** Set for a file unlinked while open: where it lives now. */
  hidden?: Hidden
}

/**
 * A file unlinked while open, kept reachable under a key no real path can take until its last
 * close (see `hide`): it lives in the work directory, so the merged view and the upper never
 * show it.
 */
interface Hidden {
  real: string
  ino: number
  /** False for a lower file: it stays where it is and is read-only. */
  owned: boolean
  /** A metadata-only copy's lower data, found while it had its name; gone once it has its data. */
  data?: string
}

/**
 * Misses are the most frequent answer of all (PATH searches, negative lookups): one shared error
 * spares building a stack trace for each. Only its code is read; it is never logged.
 */
const NO_ENTRY = new StrataError('ENOENT', 'no such file or directory')

interface Handle {
  fd: number
  /** The inode number the name had when opened: fstat must not see it change. */
  ino: number
  /** Open on the lower data of a metadata-only copy, whose attributes are the upper's. */
  dataOnly: boolean
  /**
   * Its data stays in this file for as long as it is open: not a lower file that a copy-up
   * could replace by another under the same name.
   */
  final: boolean
}

export interface DirEntry {
  name: string
  mode: number
  ino: number
}

export interface StatFs {
  bsize: number
  frsize: number
  blocks: number
  bfree: number
  bavail: number
  files: number
  ffree: number
  favail: number
  namemax: number
}

const { O_RDONLY, O_RDWR, O_TRUNC, O_NOATIME, O_NOFOLLOW, O_SYNC, O_DSYNC, O_CREAT, O_EXCL } = fs.constants
const NO_ID = 0xffffffff
const O_ACCMODE = 3

/** The ACL a directory passes on to the names made in it. */
export const DEFAULT_ACL = 'system.posix_acl_default'
/** xattrs only a privileged process may see (the kernel needs CAP_SYS_ADMIN). */
const TRUSTED_PREFIX = 'trusted.'

/** An open that may change the file's data, so works on an upper copy (`open`'s copy-up). */
export function changesData (flags: number): boolean {
  return (flags & O_ACCMODE) !== O_RDONLY || (flags & O_TRUNC) !== 0
}
/** The largest read the kernel sends (max_read): what a first read can want. */
const PREFETCH_BYTES = 128 * 1024

/**
 * The merged view of a layer stack with an optional writable upper, as kernel overlayfs defines
 * it. Path based, like libfuse's high-level API, and free of FUSE: it answers with values and
 * throws errors whose `code` names an errno.
 */
export class Overlay {
  readonly lower: LowerIndex
  private readonly upper: Upper | undefined
  private readonly copyUp: CopyUp | undefined
  private readonly handles = new Map<number, Handle>()
  /** Open files on lower data, by the inode number of their name: a copy-up moves them on. */
  private readonly onLower = new Map<number, Set<number>>()
  private readonly hidden = new Map<string, Hidden>()
  /** Upper inode → its hidden names in the work dir, which are no links of the merged view's. */
  private readonly hiddenLinks = new Map<number, number>()
  private readonly log: Logger
  private readonly xattrs: OverlayXattrs
  private readonly volatile: boolean
  /**
   * Whether a directory made in a merged one is marked opaque, as kernel overlayfs marks it
   * (ovl_create_upper) unless it allows the layers to change offline: without index, metacopy,
   * redirect_dir and xino=on. Of those, stratafs has metacopy.
   */
  private readonly marksNewDirs: boolean

  constructor (opts: OverlayOptions) {
    this.lower = opts.lower
    this.log = opts.log
    this.xattrs = opts.xattrs ?? OverlayXattrs.trusted
    this.volatile = opts.volatile === true
    this.marksNewDirs = opts.metacopy === true
    if (opts.upper !== undefined) {
      this.upper = new Upper(opts.upper.upperDir, opts.upper.workDir, this.xattrs)
      this.copyUp = new CopyUp(this.lower, this.upper, this.log, opts.metacopy === true, !this.volatile)
    }
  }

  get readOnly (): boolean {
    return this.upper === undefined
  }

  /** Called once before the mount answers. */
  init (): void {
    this.upper?.cleanWork()
    this.copyUp?.load()
  }

  /** A request is being served: work the overlay does in the background waits for a pause. */
  busy (): void {
    this.copyUp?.busy()
  }

  getattr (path: string): Attr {
    return this.resolve(path).attr
  }

  /**
   * Attributes through an open file, which still works once its name is gone. A file unlinked
   * while open and the lower-data handle of a metadata-only copy go by path: their descriptors'
   * own attributes are not the merged view's.
   */
  fgetattr (path: string | null, fh: number): Attr {
    const handle = this.handles.get(fh)
    if (handle === undefined || (path !== null && (handle.dataOnly || this.hidden.has(path)))) {
      if (path === null) throw new StrataError('EBADF', `no open file ${fh}`)
      return this.getattr(path)
    }
    const st = sys.fstat(handle.fd)
    return { ...toAttr(st, handle.ino, this.links(st)), blksize: st.blksize }
  }

  readlink (path: string): string {
    const r = this.resolve(path)
    if (!isLinkMode(r.attr.mode)) throw new StrataError('EINVAL', `${path}: not a symlink`)
    if (r.upper === undefined && r.lower?.target !== undefined) return r.lower.target
    return fs.readlinkSync(this.realOf(path, r))
  }

  readdir (path: string): DirEntry[] {
    const r = this.resolve(path)
    if (!isDirMode(r.attr.mode)) throw new StrataError('ENOTDIR', `${path}: not a directory`)
    const out: DirEntry[] = [
      { name: '.', mode: r.attr.mode, ino: r.attr.ino },
      { name: '..', mode: r.attr.mode, ino: r.attr.ino }
    ]
    const seen = new Set<string>()
    const upper = this.upper
    if (upper !== undefined && upper.dirAt(path) !== null) {
      const real = upper.real(path)
      for (const name of fs.readdirSync(real)) {
        seen.add(name)
        const st = sys.lstat(real + '/' + name)
        if (upper.isWhiteout(st)) continue
        const child = this.resolveWith(join(path, name), st)
        if (child !== undefined) out.push({ name, mode: child.attr.mode, ino: child.attr.ino })
      }
    }
    if (this.lowerVisible(path)) {
      this.lower.forEachListed(this.lowerPathOf(path), (name, mode, layer, ino) => {
        if (!seen.has(name)) out.push({ name, mode, ino: lowerIno(layer, ino) })
      })
    }
    return out
  }

  /** An xattr's value; undefined when the name has none (ENODATA), the common answer. */
  getxattr (path: string, name: string): Buffer | undefined {
    return sys.lgetxattr(this.realOf(path, this.resolve(path)), this.xattrs.real(name))
  }

  /**
   * An xattr of the file open as `fh`, read through its descriptor: no path to walk. Not for the
   * lower-data handle of a metadata-only copy, whose xattrs are the upper's.
   */
  fgetxattr (fh: number, name: string): Buffer | undefined {
    const handle = this.handle(fh)
    if (handle.dataOnly) throw new StrataError('EBADF', `open file ${fh} holds lower data only`)
    return sys.fgetxattr(handle.fd, this.xattrs.real(name))
  }

  /** As the kernel's listxattr: `trusted.*` names only for a privileged caller (root, here). */
  listxattr (path: string, caller: Caller): string[] {
    const names: string[] = []
    for (const real of sys.llistxattr(this.realOf(path, this.resolve(path)))) {
      const shown = this.xattrs.shown(real)
      if (shown !== undefined && (caller.uid === 0 || !shown.startsWith(TRUSTED_PREFIX))) names.push(shown)
    }
    return names
  }

  statfs (): StatFs {
    const st = fs.statfsSync(this.upper?.dir ?? this.lower.layerDirs[this.lower.layerDirs.length - 1] ?? '/')
    return {
      bsize: st.bsize,
      frsize: st.bsize,
      blocks: st.blocks,
      bfree: st.bfree,
      bavail: st.bavail,
      files: st.files,
      ffree: st.ffree,
      favail: st.ffree,
      namemax: 255
    }
  }

  async open (path: string, flags: number): Promise<number> {
    const r = this.resolve(path)
    if (!changesData(flags)) {
      // Whether the name's own file holds its data: not a lower file's or a metadata-only copy's.
      const own = r.hidden !== undefined ? r.hidden.owned && r.hidden.data === undefined : r.upper !== undefined && !this.isMetacopy(path, r.upper)
      const fd = own
        ? fs.openSync(this.realOf(path, r), O_RDONLY | O_NOFOLLOW)
        : fs.openSync(this.dataOf(path, r), O_RDONLY | O_NOFOLLOW | O_NOATIME)
      // The disk starts on the first read of lower data now, while the kernel is still answering
      // the open and sending that read: a cold small file is then read with one wait instead of
      // two hops. Upper files are read by the kernel itself (passthrough), and reading ahead would
      // make their preallocated blocks count as data for SEEK_DATA.
      if (!own && r.attr.size > 0) sys.prefetch(fd, Math.min(r.attr.size, PREFETCH_BYTES))
      const dataOnly = r.hidden !== undefined ? r.hidden.data !== undefined : !own && r.upper !== undefined
      const final = own || (r.hidden !== undefined && !dataOnly) || this.readOnly
      return this.addHandle(fd, r.attr.ino, final, dataOnly)
    }
    // O_SYNC and O_DSYNC cannot be set on an open descriptor: such an open takes a new one.
    const sync = flags & this.syncFlags()
    const made = await this.copiedUp(path, (flags & O_TRUNC) === 0 ? 'data' : 'none', r, sync === 0)
    // The kernel sends explicit offsets for appends, so O_APPEND stays off the real descriptor.
    const fd = made.fd ?? fs.openSync(made.real, O_RDWR | O_NOFOLLOW | (flags & O_TRUNC) | sync)
    return this.addHandle(fd, r.attr.ino, true)
  }

  async create (path: string, mode: number, flags: number, caller: Caller): Promise<number> {
    let fd = -1
    await this.place(path, caller, false, real => {
      fd = fs.openSync(real, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | (flags & this.syncFlags()), mode & 0o7777)
    })
    const { ino } = sys.fstat(fd)
    this.copyUp?.made(ino)
    return this.addHandle(fd, ino, true)
  }

  /**
   * What the page cache holds is read right here, in microseconds; only data that must come from
   * a disk goes through libuv's pool (a hop that costs more than the read itself when cached).
   */
  read (fh: number, buf: Buffer, len: number, pos: number): number | Promise<number> {
    const { fd } = this.handle(fh)
    const cached = sys.preadCached(fd, buf, len, pos)
    // A short read is the end of the file or the end of what is cached: only the size tells.
    if (cached !== undefined && (cached === len || pos + cached >= sys.fstat(fd).size)) return cached
    const done = cached ?? 0
    return new Promise((resolve, reject) => {
      fs.read(fd, buf, done, len - done, pos + done, (err, n) => err === null ? resolve(done + n) : reject(err))
    })
  }

  /**
   * Synchronous: a write of at most 128 KiB lands in the upper file's page cache in microseconds,
   * less than a round trip through libuv's pool.
   */
  write (fh: number, buf: Buffer, len: number, pos: number): number {
    return fs.writeSync(this.handle(fh).fd, buf, 0, len, pos)
  }

  /**
   * The descriptor the kernel may read and write the open file `fh` through itself (FUSE
   * passthrough), for as long as it is open: only a file whose data stays in it, never a lower
   * file a copy-up could replace while it is open.
   */
  passthroughFd (fh: number): number | undefined {
    const { fd, final } = this.handle(fh)
    return final ? fd : undefined
  }

  /** Which file the open file `fh` reads and writes, as `dev:ino`. */
  fileOf (fh: number): string {
    const st = sys.fstat(this.handle(fh).fd)
    return `${st.dev}:${st.ino}`
  }

  release (fh: number): void {
    const handle = this.handles.get(fh)
    if (handle === undefined) return
    this.handles.delete(fh)
    this.forgetOnLower(handle, fh)
    fs.closeSync(handle.fd)
  }

  private forgetOnLower (handle: Handle, fh: number): void {
    if (handle.final) return
    const open = this.onLower.get(handle.ino)
    open?.delete(fh)
    if (open?.size === 0) this.onLower.delete(handle.ino)
  }

  /**
   * The data of the name with inode number `ino` is now the upper file `real`: files open on its
   * lower data read that from now on, as on kernel overlayfs, which reopens a copied-up file's
   * descriptors. Each keeps its number, which is its handle (reads give their offsets).
   */
  private moveOnLower (ino: number, real: string): void {
    const open = this.onLower.get(ino)
    if (open === undefined) return
    this.onLower.delete(ino)
    for (const fh of open) {
      const handle = this.handles.get(fh)
      if (handle === undefined) continue
      const fd = fs.openSync(real, O_RDONLY | O_NOFOLLOW)
      try {
        sys.dup2(fd, handle.fd)
      } finally {
        fs.closeSync(fd)
      }
      handle.final = true
      handle.dataOnly = false
    }
  }

  /** The caller's open flags an upper file's descriptor takes on: none of them on a volatile mount. */
  private syncFlags (): number {
    return this.volatile ? 0 : O_SYNC | O_DSYNC
  }

  async fsync (fh: number, datasync: boolean): Promise<void> {
    const { fd } = this.handle(fh)
    if (this.volatile) return
    await new Promise<void>((resolve, reject) => {
      const done = (err: NodeJS.ErrnoException | null): void => err === null ? resolve() : reject(err)
      if (datasync) fs.fdatasync(fd, done)
      else fs.fsync(fd, done)
    })
  }

  ftruncate (fh: number, size: number): void {
    fs.ftruncateSync(this.handle(fh).fd, size)
  }

  /** fallocate(2) on an open file: the kernel sends it only for files open for writing, which are upper files. */
  fallocate (fh: number, mode: number, offset: number, length: number): void {
    sys.fallocate(this.handle(fh).fd, mode, offset, length)
  }

  /**
   * copy_file_range(2) from one open file to another, inside the kernel: the source may be lower
   * data, the destination is open for writing, so an upper file. The bytes copied.
   */
  async copyRange (fhIn: number, offIn: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return await sys.copyRange(this.handle(fhIn).fd, offIn, this.handle(fhOut).fd, offOut, len)
  }

  /** SEEK_DATA or SEEK_HOLE in an open file, upper or lower: where its data and holes are. */
  seek (fh: number, offset: number, whence: number): number {
    return sys.lseek(this.handle(fh).fd, offset, whence)
  }

  async truncate (path: string, size: number): Promise<void> {
    sys.truncate(await this.modify(path, size > 0 ? 'data' : 'none'), size)
  }

  async chmod (path: string, mode: number): Promise<void> {
    const real = await this.modify(path, 'meta')
    fs.chmodSync(real, mode & 0o7777)
  }

  async chown (path: string, uid: number, gid: number): Promise<void> {
    const real = await this.modify(path, 'meta')
    fs.lchownSync(real, uid === NO_ID ? -1 : uid, gid === NO_ID ? -1 : gid)
  }

  async utimens (path: string, atime: Timespec, mtime: Timespec): Promise<void> {
    const real = await this.modify(path, 'meta')
    sys.lutimens(real, atime, mtime)
  }

  async setxattr (path: string, shown: string, value: Buffer, flags: number): Promise<void> {
    const real = await this.modify(path, 'meta')
    sys.lsetxattr(real, this.xattrs.real(shown), value, flags)
  }

  async removexattr (path: string, shown: string): Promise<void> {
    const name = this.xattrs.real(shown)
    const missing = (real: string): boolean => sys.lgetxattr(real, name) === undefined
    const noSuch = (): StrataError => new StrataError('ENODATA', `${path}: no xattr ${shown}`)
    // As the kernel: removing an xattr a lower file does not have copies nothing up.
    const r = this.resolve(path)
    if (r.upper === undefined && r.hidden === undefined && missing(this.realOf(path, r))) throw noSuch()
    const real = await this.modify(path, 'meta')
    if (missing(real)) throw noSuch()
    sys.lremovexattr(real, name)
  }

  async mkdir (path: string, mode: number, caller: Caller): Promise<void> {
    await this.place(path, caller, true, real => fs.mkdirSync(real, mode & 0o7777))
  }

  async mknod (path: string, mode: number, rdev: number, caller: Caller): Promise<void> {
    await this.place(path, caller, false, real => sys.mknod(real, mode, rdev))
  }

  async symlink (target: string, path: string, caller: Caller): Promise<void> {
    await this.place(path, caller, false, real => fs.symlinkSync(target, real))
  }

  async link (src: string, dst: string): Promise<void> {
    const { upper } = this.writable()
    if (isDirMode(this.resolve(src).attr.mode)) throw new StrataError('EPERM', `${src}: is a directory`)
    await this.copiedUpToMove(src, false)
    await this.place(dst, undefined, false, real => fs.linkSync(upper.real(src), real))
  }

  /**
   * Copies up a file about to move or to gain a name. With metacopy, as the kernel, only its
   * metadata, and a metadata-only copy records where its data is (CopyUp.redirectBeforeMove).
   */
  private async copiedUpToMove (path: string, samedir: boolean): Promise<void> {
    const { copyUp } = this.writable()
    await copyUp.file(path, 'meta')
    copyUp.redirectBeforeMove(path, samedir)
  }

  async unlink (path: string): Promise<void> {
    const { upper, copyUp } = this.writable()
    const hidden = this.hidden.get(path)
    if (hidden !== undefined) {
      this.hidden.delete(path)
      if (hidden.owned) {
        const st = sys.lstat(hidden.real)
        fs.unlinkSync(hidden.real)
        this.noteHiddenLink(st.ino, -1)
        if (st.nlink <= 1) copyUp.inoOf.forget(st.ino)
      }
      return
    }
    await copyUp.settle(path)
    const r = this.resolve(path)
    if (isDirMode(r.attr.mode)) throw new StrataError('EISDIR', `${path}: is a directory`)
    if (r.upper !== undefined && r.upper.nlink <= 1) copyUp.inoOf.forget(r.upper.ino)
    if (this.lowerOf(path) === undefined) {
      fs.unlinkSync(upper.real(path))
      return
    }
    copyUp.dirs(parentOf(path))
    upper.whiteout(path)
  }

  async rmdir (path: string): Promise<void> {
    const { upper, copyUp } = this.writable()
    const r = this.resolve(path)
    if (!isDirMode(r.attr.mode)) throw new StrataError('ENOTDIR', `${path}: not a directory`)
    if (path === '/') throw new StrataError('EBUSY', 'the root cannot be removed')
    if (this.readdir(path).length > 2) throw new StrataError('ENOTEMPTY', `${path}: directory not empty`)
    const needsWhiteout = this.lowerUnder(path) !== undefined
    if (upper.dirAt(path) === null) {
      copyUp.dirs(parentOf(path))
      upper.whiteout(path)
    } else {
      if (r.upper !== undefined) copyUp.inoOf.forget(r.upper.ino)
      // The upper copy may still hold whiteouts: move it out of sight whole, then delete it.
      fs.rmSync(upper.takeAway(path, needsWhiteout), { recursive: true, force: true })
    }
    upper.forgetDirs()
  }

  /** `noReplace`: renameat2's RENAME_NOREPLACE, an existing `dst` is EEXIST. */
  async rename (src: string, dst: string, noReplace = false): Promise<void> {
    const { upper, copyUp } = this.writable()
    await copyUp.settle(src)
    await copyUp.settle(dst)
    const from = this.resolve(src)
    const to = this.resolveOrUndefined(dst)
    const srcIsDir = isDirMode(from.attr.mode)
    const srcState = srcIsDir ? this.movableDir(src) : null
    if (to !== undefined && noReplace) throw new StrataError('EEXIST', `${dst}: exists`)
    if (to !== undefined) {
      if (to.attr.ino === from.attr.ino) return
      const dstIsDir = isDirMode(to.attr.mode)
      if (srcIsDir && !dstIsDir) throw new StrataError('ENOTDIR', `${dst}: not a directory`)
      if (!srcIsDir && dstIsDir) throw new StrataError('EISDIR', `${dst}: is a directory`)
      if (dstIsDir && this.readdir(dst).length > 2) {
        // The kernel marks the moved directory (below) before its rename of the upper copies
        // fails, and leaves the marker; it checks a destination it does not hold whole first.
        if (srcState?.opaque === false && this.wholeInUpper(dst) !== null && this.isMerged(parentOf(dst))) {
          upper.setOpaque(upper.real(src))
          upper.noteDir(src, true)
        }
        throw new StrataError('ENOTEMPTY', `${dst}: directory not empty`)
      }
    }
    if (!srcIsDir) await this.copiedUpToMove(src, parentOf(src) === parentOf(dst))
    copyUp.dirs(parentOf(dst))
    const srcReal = upper.real(src)
    const dstReal = upper.real(dst)
    const srcNeedsWhiteout = this.lowerOf(src) !== undefined
    let dstSt = upper.stat(dst)
    if (dstSt !== undefined && (isDirMode(dstSt.mode) || dstSt.nlink <= 1)) copyUp.inoOf.forget(dstSt.ino)
    let trash: string | undefined
    if (dstSt !== undefined && isDirMode(dstSt.mode)) {
      trash = upper.tmpName()
      fs.renameSync(dstReal, trash)
      dstSt = undefined
    }
    if (srcIsDir && srcState?.opaque === false && (upper.isWhiteout(dstSt) || this.isMerged(parentOf(dst)))) {
      // Lower names at the destination must not show through the moved directory.
      upper.setOpaque(srcReal)
    }
    if (upper.isWhiteout(dstSt) && (srcIsDir || srcNeedsWhiteout)) {
      // As the kernel: the whiteout already at the destination trades places with the source,
      // keeping its owner, and goes if the source's name needs none.
      sys.renameat2(srcReal, dstReal, sys.RENAME_EXCHANGE)
      if (!srcNeedsWhiteout) fs.unlinkSync(srcReal)
    } else {
      upper.move(src, dstReal, srcNeedsWhiteout)
    }
    if (trash !== undefined) fs.rmSync(trash, { recursive: true, force: true })
    if (srcIsDir) upper.forgetDirs()
  }

  /**
   * renameat2's RENAME_EXCHANGE: `a` and `b`, both existing, trade places in one rename of their
   * upper copies, so no whiteout is needed. Directories move as in `rename`.
   */
  async exchange (a: string, b: string): Promise<void> {
    const { upper, copyUp } = this.writable()
    await copyUp.settle(a)
    await copyUp.settle(b)
    const ra = this.resolve(a)
    const rb = this.resolve(b)
    // Two names of one inode: as the VFS, nothing to do.
    if (ra.attr.ino === rb.attr.ino) return
    const aIsDir = isDirMode(ra.attr.mode)
    const bIsDir = isDirMode(rb.attr.mode)
    const aOpaque = aIsDir && this.movableDir(a).opaque
    const bOpaque = bIsDir && this.movableDir(b).opaque
    const samedir = parentOf(a) === parentOf(b)
    if (!aIsDir) await this.copiedUpToMove(a, samedir)
    if (!bIsDir) await this.copiedUpToMove(b, samedir)
    // Lower names at either destination must not show through a directory moved there.
    if (aIsDir && !aOpaque && this.isMerged(parentOf(b))) upper.setOpaque(upper.real(a))
    if (bIsDir && !bOpaque && this.isMerged(parentOf(a))) upper.setOpaque(upper.real(b))
    sys.renameat2(upper.real(a), upper.real(b), sys.RENAME_EXCHANGE)
    if (aIsDir || bIsDir) upper.forgetDirs()
  }

  /**
   * The upper state of a directory a rename may move: only one the upper holds whole (upper-only,
   * or opaque over the lower). As the kernel without redirect_dir, any other answers EXDEV and
   * the caller (mv) falls back to copying.
   */
  private movableDir (path: string): { opaque: boolean } {
    const state = this.wholeInUpper(path)
    if (state === null) throw new StrataError('EXDEV', `${path}: a directory from the lower layers cannot be renamed`)
    return state
  }

  /** The upper state of directory `path` when the upper holds it whole: upper-only, or opaque over the lower. */
  private wholeInUpper (path: string): { opaque: boolean } | null {
    const state = this.writable().upper.dirAt(path)
    return state === null || (this.lowerOf(path) !== undefined && !state.opaque) ? null : state
  }

  /**
   * Removes `path` from the merged view as unlink does, but keeps the file reachable as `key` (a
   * string no real path can be, e.g. with a NUL in it) for what its open descriptors still do;
   * `unlink(key)` ends it.
   */
  async hide (path: string, key: string): Promise<void> {
    const { upper, copyUp } = this.writable()
    await copyUp.settle(path)
    const r = this.resolve(path)
    if (isDirMode(r.attr.mode)) throw new StrataError('EISDIR', `${path}: is a directory`)
    const needsWhiteout = this.lowerOf(path) !== undefined
    if (r.upper !== undefined) {
      // A metadata-only copy's data stays where its name found it.
      const data = this.isMetacopy(path, r.upper) ? this.dataOf(path, r) : undefined
      this.hidden.set(key, { real: upper.takeAway(path, needsWhiteout), ino: r.attr.ino, owned: true, data })
      this.noteHiddenLink(r.upper.ino, 1)
      return
    }
    this.hidden.set(key, { real: this.realOf(path, r), ino: r.attr.ino, owned: false })
    copyUp.dirs(parentOf(path))
    upper.whiteout(path)
  }

  /** Resolves a path of the merged view, or throws ENOENT. */
  resolve (path: string): Resolved {
    const r = this.resolveOrUndefined(path)
    if (r === undefined) throw NO_ENTRY
    return r
  }

  private resolveOrUndefined (path: string): Resolved | undefined {
    const hidden = this.hidden.get(path)
    if (hidden !== undefined) {
      const st = sys.lstat(hidden.real)
      return { attr: toAttr(st, hidden.ino, hidden.owned ? this.links(st) : st.nlink), upper: st, hidden }
    }
    const upper = this.upper
    if (upper === undefined) return this.fromLower(this.lower.lookup(path))
    const st = path === '/' || upper.dirAt(parentOf(path)) !== null ? upper.stat(path) : undefined
    if (st !== undefined) this.checkFollowed(path, st)
    return this.resolveWith(path, st)
  }

  /** Resolves a name whose upper node (if any) is already known. */
  private noteHiddenLink (ino: number, delta: number): void {
    const n = (this.hiddenLinks.get(ino) ?? 0) + delta
    if (n > 0) this.hiddenLinks.set(ino, n)
    else this.hiddenLinks.delete(ino)
  }

  /** An upper file's link count in the merged view: an unlinked file still open shows 0. */
  private links (st: Stat): number {
    return st.nlink - (this.hiddenLinks.get(st.ino) ?? 0)
  }

  private resolveWith (path: string, st: Stat | undefined): Resolved | undefined {
    const upper = this.upper
    if (upper === undefined || st === undefined) return this.fromLower(this.lowerOf(path))
    if (upper.isWhiteout(st)) return undefined
    if (isDirMode(st.mode)) {
      // Its own state first: a redirect there says where its lower directory is.
      const lower = upper.dirAt(path)?.opaque === true ? undefined : this.lowerOf(path)
      if (lower !== undefined && isDirMode(lower.attr.mode)) {
        return { attr: toAttr(st, lowerIno(lower.layer, lower.attr.ino), 1), upper: st, lower }
      }
    }
    const attr = toAttr(st, this.copyUp?.inoOf.get(st.ino) ?? st.ino, this.links(st))
    // A metadata-only copy occupies the lower file's blocks, as the kernel reports it.
    if (this.isMetacopy(path, st)) attr.blocks = this.copyUp?.lowerData(path)?.entry.attr.blocks ?? attr.blocks
    return { attr, upper: st }
  }

  private fromLower (entry: IndexEntry | undefined): Resolved | undefined {
    if (entry === undefined) return undefined
    const nlink = entry.merged === true ? 1 : entry.attr.nlink
    return { attr: toAttr(entry.attr, lowerIno(entry.layer, entry.attr.ino), nlink), lower: entry }
  }

  /** The lower entry at `path`, when the upper does not hide its whole directory. */
  private lowerOf (path: string): IndexEntry | undefined {
    if (path === '/') return this.lower.root
    const visible = this.upper?.redirectsFromRoot(path) === true || this.lowerVisible(parentOf(path))
    return visible ? this.lower.lookup(this.lowerPathOf(path)) : undefined
  }

  /**
   * The lower entry under the name of `path` in its parent's lower directory, whatever a redirect
   * of its own says: what a whiteout must hide when the name goes (the kernel's ovl_lower_positive).
   */
  private lowerUnder (path: string): IndexEntry | undefined {
    if (!this.lowerVisible(parentOf(path))) return undefined
    return this.lower.lookup(join(this.lowerPathOf(parentOf(path)), baseName(path)))
  }

  /** Whether the lower names inside directory `dir` show through. */
  private lowerVisible (dir: string): boolean {
    if (this.upper === undefined || dir === '/') return true
    if (this.upper.dirAt(dir)?.opaque === true || !this.lower.isDir(this.upper.lowerPath(dir))) return false
    return this.upper.redirectsFromRoot(dir) || this.lowerVisible(parentOf(dir))
  }

  /** A name the kernel would refuse to look up: a metadata-only copy or a redirect it does not follow. */
  private checkFollowed (path: string, st: Stat): void {
    if (!isDirMode(st.mode)) {
      this.copyUp?.checkFollowed(path, st)
      return
    }
    const refused = this.upper?.dirAt(path)?.refused
    if (refused !== undefined) throw refused
  }

  /** Where the lower layers keep `path` (see Upper.lowerPath). */
  private lowerPathOf (path: string): string {
    return this.upper === undefined ? path : this.upper.lowerPath(path)
  }

  /** A directory present in the upper and below it, merging the two. */
  private isMerged (dir: string): boolean {
    const state = this.upper?.dirAt(dir)
    if (state === undefined || state === null || state.opaque) return false
    const entry = this.lowerOf(dir)
    return entry !== undefined && isDirMode(entry.attr.mode)
  }

  private realOf (path: string, r: Resolved): string {
    if (r.hidden !== undefined) return r.hidden.real
    if (r.upper !== undefined && this.upper !== undefined) return this.upper.real(path)
    if (r.lower !== undefined) return this.lower.realPath(this.lowerPathOf(path), r.lower)
    throw new StrataError('ENOENT', `${path}: no such file or directory`)
  }

  /** The file holding a name's data: the lower file for lower names and metadata-only copies. */
  private dataOf (path: string, r: Resolved): string {
    if (r.hidden?.data !== undefined) return r.hidden.data
    if (r.upper !== undefined && r.hidden === undefined && this.copyUp !== undefined) return this.copyUp.lowerDataPath(path)
    return this.realOf(path, r)
  }

  private writable (): { upper: Upper, copyUp: CopyUp } {
    if (this.upper === undefined || this.copyUp === undefined) throw new StrataError('EROFS', 'read-only mount')
    return { upper: this.upper, copyUp: this.copyUp }
  }

  /**
   * Copies `path` up (the triggers of design §2 item 5) and returns its upper path. `r`: the path
   * resolved by a caller that needed it too, with nothing awaited since.
   */
  private async modify (path: string, need: CopyNeed, r: Resolved = this.resolve(path)): Promise<string> {
    return (await this.copiedUp(path, need, r, false)).real
  }

  /**
   * modify(), and with `keep` the descriptor a copy-up made now filled, open for reading and
   * writing (see CopyUp.file).
   */
  private async copiedUp (path: string, need: CopyNeed, r: Resolved, keep: boolean): Promise<{ real: string, fd?: number }> {
    const { upper, copyUp } = this.writable()
    const { hidden } = r
    if (hidden !== undefined) {
      if (!hidden.owned) throw new StrataError('EROFS', `${path}: an unlinked lower file cannot change`)
      if (hidden.data !== undefined && need !== 'meta') {
        await copyUp.fill(hidden.real, need === 'data' ? hidden.data : undefined, sys.lstat(hidden.real))
        hidden.data = undefined
        this.moveOnLower(hidden.ino, hidden.real)
      }
      return { real: hidden.real }
    }
    const fd = await copyUp.file(path, need, { upper: r.upper }, keep)
    const real = upper.real(path)
    try {
      if (need !== 'meta') this.moveOnLower(r.attr.ino, real)
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd)
      throw err
    }
    return { real, fd }
  }

  /**
   * Creates a new name with `make`. Over a whiteout the node is built in the work directory and
   * renamed onto it, so the lower name never reappears; a directory made there is opaque.
   */
  private async place (path: string, caller: Caller | undefined, dir: boolean, make: (real: string) => void): Promise<void> {
    const { upper, copyUp } = this.writable()
    await copyUp.settle(path)
    const parent = parentOf(path)
    copyUp.dirs(parent)
    const real = upper.real(path)
    const st = upper.stat(path)
    if (st !== undefined && !upper.isWhiteout(st)) throw new StrataError('EEXIST', `${path}: file exists`)
    if (st === undefined && this.lowerOf(path) !== undefined) throw new StrataError('EEXIST', `${path}: file exists`)
    // A setgid directory gives new names its group, and new directories its setgid bit; a node
    // built in the work directory must be given them by hand.
    const pst = sys.lstat(upper.real(parent))
    const inheritGid = (pst.mode & S_ISGID) !== 0
    const own = (p: string): void => {
      if (caller !== undefined) fs.lchownSync(p, caller.uid, inheritGid ? pst.gid : caller.gid)
      if (dir && inheritGid) fs.chmodSync(p, (sys.lstat(p).mode & 0o7777) | S_ISGID)
    }
    if (st === undefined) {
      make(real)
      own(real)
      if (dir) upper.noteDir(path, this.marksNewDirs && this.isMerged(parent) && this.markedOpaque(upper, real))
      return
    }
    // The filesystem passes a directory's default ACL on as it makes a node; one built in the work
    // directory would miss it, so it is built in a box carrying the same default ACL.
    const defaultAcl = sys.lgetxattr(upper.real(parent), DEFAULT_ACL)
    const box = defaultAcl === undefined ? undefined : upper.tmpName()
    if (box !== undefined) {
      fs.mkdirSync(box, { mode: 0o700 })
      sys.lsetxattr(box, DEFAULT_ACL, defaultAcl!)
    }
    try {
      const tmp = box === undefined ? upper.tmpName() : `${box}/node`
      make(tmp)
      own(tmp)
      if (dir) {
        upper.setOpaque(tmp)
        sys.renameat2(tmp, real, sys.RENAME_EXCHANGE)
        fs.unlinkSync(tmp)
        upper.noteDir(path, true)
      } else {
        fs.renameSync(tmp, real)
      }
    } finally {
      if (box !== undefined) fs.rmSync(box, { recursive: true, force: true })
    }
  }

  /**
   * Marks a new directory opaque (see marksNewDirs), so that no lookup below it searches the
   * layers, which hold nothing there. An optimisation, in the kernel as here: a marker that
   * cannot be set fails nothing.
   */
  private markedOpaque (upper: Upper, real: string): boolean {
    try {
      upper.setOpaque(real)
      return true
    } catch (err) {
      this.log.debug({ err, real }, 'a new directory is not marked opaque')
      return false
    }
  }

  private addHandle (fd: number, ino: number, final: boolean, dataOnly = false): number {
    this.handles.set(fd, { fd, ino, dataOnly, final })
    if (!final) {
      const open = this.onLower.get(ino) ?? new Set<number>()
      open.add(fd)
      this.onLower.set(ino, open)
    }
    return fd
  }

  private isMetacopy (path: string, st: Stat): boolean {
    return this.copyUp?.isMetacopy(path, st) === true
  }

  private handle (fh: number): Handle {
    const handle = this.handles.get(fh)
    if (handle === undefined) throw new StrataError('EBADF', `no open file ${fh}`)
    return handle
  }

  /** Closes every open file: the mount is going away. */
  close (): void {
    for (const fh of [...this.handles.keys()]) this.release(fh)
    this.copyUp?.close()
    this.log.debug('overlay closed')
  }
}
