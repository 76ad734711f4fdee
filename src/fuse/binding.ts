import { createRequire } from 'node:module'

/**
 * The native half of a FUSE session (native/fuse-session.c, built by scripts/setup.sh): libfuse 3's
 * low-level API served on this thread. Requests arrive as calls of `FuseHandlers`, each carrying an
 * opaque request number that exactly one reply function must later receive.
 */
export type Req = number

export interface FuseHandlers {
  init (): void
  /** The kernel ended the session: someone unmounted it. */
  exit (): void
  lookup (req: Req, parent: number, name: string): void
  forget (node: number, lookups: number): void
  getattr (req: Req, node: number, fh: number): void
  setattr (req: Req, node: number, toSet: number, mode: number, uid: number, gid: number, size: number,
    atime: number, atimeNs: number, mtime: number, mtimeNs: number, fh: number): void
  readlink (req: Req, node: number): void
  mknod (req: Req, parent: number, name: string, mode: number, rdev: number): void
  mkdir (req: Req, parent: number, name: string, mode: number): void
  unlink (req: Req, parent: number, name: string): void
  rmdir (req: Req, parent: number, name: string): void
  symlink (req: Req, parent: number, name: string, target: string): void
  /** `flags`: renameat2's RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT. */
  rename (req: Req, parent: number, name: string, newParent: number, newName: string, flags: number): void
  link (req: Req, node: number, newParent: number, newName: string): void
  open (req: Req, node: number, flags: number): void
  read (req: Req, node: number, size: number, offset: number, fh: number): void
  /** `data` is valid during the call only: the next request overwrites it. */
  write (req: Req, node: number, data: Buffer, offset: number, fh: number): void
  release (req: Req, node: number, fh: number): void
  fsync (req: Req, node: number, datasync: number, fh: number): void
  opendir (req: Req, node: number): void
  readdir (req: Req, node: number, size: number, offset: number, fh: number): void
  /** A readdir whose answer carries each entry's lookup (see direntPlusSlice). */
  readdirplus (req: Req, node: number, size: number, offset: number, fh: number): void
  releasedir (req: Req, node: number, fh: number): void
  statfs (req: Req, node: number): void
  setxattr (req: Req, node: number, name: string, value: Buffer, flags: number): void
  getxattr (req: Req, node: number, name: string, size: number): void
  listxattr (req: Req, node: number, size: number): void
  removexattr (req: Req, node: number, name: string): void
  create (req: Req, parent: number, name: string, mode: number, flags: number): void
  /** `mode`: fallocate(2)'s FALLOC_FL_KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE, as the kernel passes them. */
  fallocate (req: Req, node: number, mode: number, offset: number, length: number, fh: number): void
  /** Between two open files (copy_file_range's flags are always 0 here). */
  copyFileRange (req: Req, fhIn: number, offsetIn: number, fhOut: number, offsetOut: number, length: number): void
  /** `whence`: SEEK_DATA or SEEK_HOLE. */
  lseek (req: Req, node: number, offset: number, whence: number, fh: number): void
}

declare const session: unique symbol
export type NativeSession = { readonly [session]: true }

export interface NativeBinding {
  /** Throws an Error (libfuse's own words, and `errno`) when the kernel or libfuse refuses. */
  mount (mountpoint: string, options: string, handlers: FuseHandlers, scratch: Float64Array): NativeSession
  unmount (session: NativeSession): void
  invalidateAttr (session: NativeSession, node: number): void
  /** A backing file's id (> 0) for passthrough, or -errno (EOPNOTSUPP: the kernel has none). */
  backingOpen (session: NativeSession, fd: number): number
  backingClose (session: NativeSession, id: number): void
  replyErr (req: Req, errno: number): void
  replyEntry (req: Req, node: number, entryTimeout: number, attrTimeout: number): void
  replyCreate (req: Req, node: number, entryTimeout: number, attrTimeout: number, fh: number, openFlags: number, backing: number): void
  replyAttr (req: Req, attrTimeout: number): void
  replyOpen (req: Req, fh: number, openFlags: number, backing: number): void
  replyBuf (req: Req, bytes: Buffer, length: number): void
  replyWrite (req: Req, count: number): void
  replyReadlink (req: Req, target: string): void
  replyXattr (req: Req, size: number): void
  replyLseek (req: Req, offset: number): void
  replyStatfs (req: Req): void
}

/** Slots of the scratch array shared with the C side (its enum of the same names). */
export const SCRATCH = {
  ino: 0, mode: 1, nlink: 2, uid: 3, gid: 4, rdev: 5, size: 6, blocks: 7, blksize: 8,
  atime: 9, atimeNs: 10, mtime: 11, mtimeNs: 12, ctime: 13, ctimeNs: 14,
  callerUid: 16, callerGid: 17, callerPid: 18, callerUmask: 19,
  bsize: 20, frsize: 21, fblocks: 22, bfree: 23, bavail: 24, files: 25, ffree: 26, favail: 27, namemax: 28,
  length: 32
} as const

export const binding = createRequire(import.meta.url)('../../native/build/Release/fuse_session.node') as NativeBinding
