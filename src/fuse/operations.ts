import type { Logger } from 'pino'
import type { Timespec } from '../layers/entry.js'
import type { Attr, Caller } from '../overlay/attr.js'
import type { Overlay } from '../overlay/overlay.js'
import { packListing } from './dir-listing.js'
import { toErrno } from './errno.js'

/* eslint-disable @typescript-eslint/no-explicit-any -- fuse-native calls back with loose tuples */
type Cb = (...args: any[]) => void

const ROOT: Caller = { uid: 0, gid: 0, pid: 0 }

/** The stat shape the patched fuse-native binding takes (nanosecond times, 53-bit inodes). */
function stat (attr: Attr): Record<string, unknown> {
  return attr as unknown as Record<string, unknown>
}

const S_IFMT = 0o170000
const S_IFDIR = 0o040000

/**
 * libfuse gives each name of a file its own kernel inode, so a change through one hard link
 * would leave what the kernel caches for the others stale: their answers are not cached.
 * Directories cannot be linked, and the kernel refreshes their own attributes after a change
 * inside them.
 */
function writableStat (attr: Attr): Record<string, unknown> {
  if (attr.nlink <= 1 || (attr.mode & S_IFMT) === S_IFDIR) return stat(attr)
  return { ...attr, cacheable: false }
}

/**
 * fuse-native callbacks → overlay calls. Requests reach here on the one JS thread; an async
 * overlay call (data, copy-up) lets others run meanwhile. Every error becomes an errno here and
 * nowhere else; nothing a request does can throw out of its handler.
 */
export function operations (overlay: Overlay, caller: () => Caller | undefined, log: Logger): Record<string, Cb> {
  const run = (op: string, path: string | null, cb: Cb, fn: () => unknown): void => {
    let result: unknown
    try {
      result = fn()
    } catch (err) {
      cb(toErrno(err, log, op, path))
      return
    }
    if (result instanceof Promise) {
      result.then(value => answer(value), err => cb(toErrno(err, log, op, path)))
    } else {
      answer(result)
    }
    function answer (value: unknown): void {
      if (value === undefined) cb(0)
      else cb(0, value)
    }
  }
  /** read and write answer with a byte count in the error slot, as fuse-native expects. */
  const count = (op: string, cb: Cb, fn: () => number | Promise<number>): void => {
    let n: number | Promise<number>
    try {
      n = fn()
    } catch (err) {
      cb(toErrno(err, log, op, null))
      return
    }
    if (typeof n === 'number') cb(n)
    else n.then(bytes => cb(bytes), err => cb(toErrno(err, log, op, null)))
  }
  const who = (): Caller => caller() ?? ROOT
  const answerStat = overlay.readOnly ? stat : writableStat

  return {
    init: (cb: Cb) => run('init', null, cb, () => overlay.init()),
    getattr: (path: string, cb: Cb) => run('getattr', path, cb, () => answerStat(overlay.getattr(path))),
    fgetattr: (path: string | null, fd: number, cb: Cb) => run('fgetattr', path, cb, () => answerStat(overlay.fgetattr(path, fd))),
    access: (path: string, _mode: number, cb: Cb) => run('access', path, cb, () => { overlay.getattr(path) }),
    readlink: (path: string, cb: Cb) => run('readlink', path, cb, () => overlay.readlink(path)),
    readdir: (path: string, cb: Cb) => {
      try {
        const { names, attrs } = packListing(overlay.readdir(path))
        cb(0, names, attrs)
      } catch (err) {
        cb(toErrno(err, log, 'readdir', path))
      }
    },
    statfs: (path: string, cb: Cb) => run('statfs', path, cb, () => overlay.statfs()),
    getxattr: (path: string, name: string, _position: number, cb: Cb) => run('getxattr', path, cb, () => overlay.getxattr(path, name) ?? null),
    listxattr: (path: string, cb: Cb) => run('listxattr', path, cb, () => overlay.listxattr(path)),
    open: (path: string, flags: number, cb: Cb) => run('open', path, cb, async () => await overlay.open(path, flags)),
    create: (path: string, mode: number, flags: number, cb: Cb) => run('create', path, cb, async () => await overlay.create(path, mode, flags, who())),
    read: (_path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => count('read', cb, () => overlay.read(fd, buf, len, pos)),
    write: (_path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => count('write', cb, () => overlay.write(fd, buf, len, pos)),
    release: (path: string | null, fd: number, cb: Cb) => run('release', path, cb, () => overlay.release(fd)),
    fsync: (path: string | null, fd: number, datasync: number, cb: Cb) => run('fsync', path, cb, async () => await overlay.fsync(fd, datasync !== 0)),
    ftruncate: (path: string | null, fd: number, size: number, cb: Cb) => run('ftruncate', path, cb, () => overlay.ftruncate(fd, size)),
    truncate: (path: string, size: number, cb: Cb) => run('truncate', path, cb, async () => await overlay.truncate(path, size)),
    chmod: (path: string, mode: number, cb: Cb) => run('chmod', path, cb, async () => await overlay.chmod(path, mode)),
    chown: (path: string, uid: number, gid: number, cb: Cb) => run('chown', path, cb, async () => await overlay.chown(path, uid, gid)),
    utimens: (path: string, atime: Timespec, mtime: Timespec, cb: Cb) => run('utimens', path, cb, async () => await overlay.utimens(path, atime, mtime)),
    setxattr: (path: string, name: string, value: Buffer, _position: number, flags: number, cb: Cb) =>
      run('setxattr', path, cb, async () => await overlay.setxattr(path, name, Buffer.from(value), flags)),
    removexattr: (path: string, name: string, cb: Cb) => run('removexattr', path, cb, async () => await overlay.removexattr(path, name)),
    mknod: (path: string, mode: number, dev: number, cb: Cb) => run('mknod', path, cb, async () => await overlay.mknod(path, mode, dev, who())),
    mkdir: (path: string, mode: number, cb: Cb) => run('mkdir', path, cb, async () => await overlay.mkdir(path, mode, who())),
    symlink: (target: string, path: string, cb: Cb) => run('symlink', path, cb, async () => await overlay.symlink(target, path, who())),
    link: (src: string, dst: string, cb: Cb) => run('link', dst, cb, async () => await overlay.link(src, dst)),
    unlink: (path: string, cb: Cb) => run('unlink', path, cb, async () => await overlay.unlink(path)),
    rmdir: (path: string, cb: Cb) => run('rmdir', path, cb, async () => await overlay.rmdir(path)),
    rename: (src: string, dst: string, cb: Cb) => run('rename', src, cb, async () => await overlay.rename(src, dst))
  }
}
