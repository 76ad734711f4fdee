import { koffi, libc, sysError } from './libc.js'

const RWF_NOWAIT = 0x8

const iovec = koffi.struct('stratafs_iovec', { base: 'void *', len: 'size_t' })
const preadv2 = libc.func('preadv2', 'int64_t', ['int', koffi.pointer(iovec), 'int', 'int64_t', 'int'])

const { EAGAIN, EOPNOTSUPP } = koffi.os.errno

/**
 * Reads what the page cache already holds, without ever waiting on a disk (preadv2 RWF_NOWAIT):
 * the bytes read, which may be fewer than asked, or undefined when the data is not cached (or the
 * filesystem cannot say), so the caller reads the slow way, off this thread.
 */
export function preadCached (fd: number, buf: Buffer, len: number, pos: number): number | undefined {
  const n = Number(preadv2(fd, [{ base: buf, len }], 1, pos, RWF_NOWAIT))
  if (n >= 0) return n
  const errno = koffi.errno()
  if (errno === EAGAIN || errno === EOPNOTSUPP) return undefined
  throw sysError('preadv2', errno)
}

const POSIX_FADV_WILLNEED = 3
const posixFadvise = libc.func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)')

/**
 * Starts reading the first `len` bytes into the page cache and returns at once. Advice only: a
 * filesystem that ignores it loses nothing.
 */
export function prefetch (fd: number, len: number): void {
  posixFadvise(fd, 0, len, POSIX_FADV_WILLNEED)
}
