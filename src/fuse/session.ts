import { constants } from 'node:os'
import type { Attr, Caller } from '../overlay/attr.js'
import type { StatFs } from '../overlay/overlay.js'
import { binding, SCRATCH, type FuseHandlers, type NativeSession, type Req } from './binding.js'

const { EBADF } = constants.errno

/** Open reply flags, as the C side reads them. */
export const KEEP_CACHE = 2
/** For opendir: the kernel keeps the listing, until a change it makes in that directory. */
export const CACHE_DIR = 4

/**
 * One mounted FUSE session and the replies to its requests. Attributes and statfs answers cross
 * through a scratch array written just before the reply, so a reply is one native call. Replies
 * that arrive after the unmount (an async request that outlived it) are dropped: their request
 * went with the session.
 */
export class FuseSession {
  private readonly scratch = new Float64Array(SCRATCH.length)
  private readonly native: NativeSession
  private closed = false

  constructor (mountpoint: string, options: readonly string[], handlers: FuseHandlers) {
    this.native = binding.mount(mountpoint, options.join(','), handlers, this.scratch)
  }

  /** Who sent the request being handled: read it before the handler's first await. */
  caller (): Caller {
    const s = this.scratch
    return { uid: s[SCRATCH.callerUid]!, gid: s[SCRATCH.callerGid]!, pid: s[SCRATCH.callerPid]! }
  }

  /** The umask of the request being handled, which the kernel left to us: read it before the first await. */
  umask (): number {
    return this.scratch[SCRATCH.callerUmask]!
  }

  /** Detaches the mount (lazily, as `fusermount -uz`) and ends the session. */
  unmount (): void {
    if (this.closed) return
    this.closed = true
    binding.unmount(this.native)
  }

  /** The kernel forgets the attributes it holds for a node and asks again at the next stat. */
  invalidateAttr (node: number): void {
    if (!this.closed) binding.invalidateAttr(this.native, node)
  }

  /**
   * Registers the open file `fd` for passthrough: the id an open or create answer hands the
   * kernel, which then reads and writes that file itself. A negative errno when it cannot.
   */
  backingOpen (fd: number): number {
    return this.closed ? -EBADF : binding.backingOpen(this.native, fd)
  }

  backingClose (id: number): void {
    if (!this.closed) binding.backingClose(this.native, id)
  }

  err (req: Req, errno: number): void {
    if (!this.closed) binding.replyErr(req, errno)
  }

  ok (req: Req): void {
    this.err(req, 0)
  }

  entry (req: Req, node: number, attr: Attr, entryTimeout: number, attrTimeout: number): void {
    if (this.closed) return
    this.setAttr(attr)
    binding.replyEntry(req, node, entryTimeout, attrTimeout)
  }

  /** A miss the kernel may remember for `timeout` seconds. */
  noEntry (req: Req, timeout: number): void {
    if (!this.closed) binding.replyEntry(req, 0, timeout, 0)
  }

  /** `backing`: a backing file's id, for passthrough; 0 for none. */
  create (req: Req, node: number, attr: Attr, timeout: number, fh: number, openFlags: number, backing: number): void {
    if (this.closed) return
    this.setAttr(attr)
    binding.replyCreate(req, node, timeout, timeout, fh, openFlags, backing)
  }

  attr (req: Req, attr: Attr, timeout: number): void {
    if (this.closed) return
    this.setAttr(attr)
    binding.replyAttr(req, timeout)
  }

  /** `backing`: a backing file's id, for passthrough; 0 for none. */
  open (req: Req, fh: number, openFlags: number, backing = 0): void {
    if (!this.closed) binding.replyOpen(req, fh, openFlags, backing)
  }

  buf (req: Req, bytes: Buffer, length = bytes.length): void {
    if (!this.closed) binding.replyBuf(req, bytes, length)
  }

  written (req: Req, count: number): void {
    if (!this.closed) binding.replyWrite(req, count)
  }

  readlink (req: Req, target: string): void {
    if (!this.closed) binding.replyReadlink(req, target)
  }

  offset (req: Req, offset: number): void {
    if (!this.closed) binding.replyLseek(req, offset)
  }

  xattrSize (req: Req, size: number): void {
    if (!this.closed) binding.replyXattr(req, size)
  }

  statfs (req: Req, st: StatFs): void {
    if (this.closed) return
    const s = this.scratch
    s[SCRATCH.bsize] = st.bsize
    s[SCRATCH.frsize] = st.frsize
    s[SCRATCH.fblocks] = st.blocks
    s[SCRATCH.bfree] = st.bfree
    s[SCRATCH.bavail] = st.bavail
    s[SCRATCH.files] = st.files
    s[SCRATCH.ffree] = st.ffree
    s[SCRATCH.favail] = st.favail
    s[SCRATCH.namemax] = st.namemax
    binding.replyStatfs(req)
  }

  private setAttr (a: Attr): void {
    const s = this.scratch
    s[SCRATCH.ino] = a.ino
    s[SCRATCH.mode] = a.mode
    s[SCRATCH.nlink] = a.nlink
    s[SCRATCH.uid] = a.uid
    s[SCRATCH.gid] = a.gid
    s[SCRATCH.rdev] = a.rdev
    s[SCRATCH.size] = a.size
    s[SCRATCH.blocks] = a.blocks
    s[SCRATCH.blksize] = a.blksize
    s[SCRATCH.atime] = a.atime[0]
    s[SCRATCH.atimeNs] = a.atime[1]
    s[SCRATCH.mtime] = a.mtime[0]
    s[SCRATCH.mtimeNs] = a.mtime[1]
    s[SCRATCH.ctime] = a.ctime[0]
    s[SCRATCH.ctimeNs] = a.ctime[1]
  }
}
