import { read, write, ftruncateSync } from 'node:fs'
import { promisify } from 'node:util'
import { koffi, libc, sysError, type SysError } from './libc.js'
import { lseek, SEEK_DATA, SEEK_HOLE, SEEK_SET } from './seek.js'

export type CopyMethod = 'reflink' | 'copy_file_range' | 'buffered'

const FICLONE = 0x40049409
/** Large enough to keep syscall overhead negligible, small enough to spread across the pool. */
const CHUNK = 16 * 1024 * 1024
const BUFFERED_CHUNK = 1024 * 1024
/**
 * Up to this size a copy_file_range runs on the JS thread: it takes a few microseconds from the
 * page cache, less than the hop to a pool thread and back, and small files are most copy-ups.
 */
const SYNC_LIMIT = 1024 * 1024

const ioctl = libc.func('int ioctl(int fd, unsigned long request, int arg)')
const copyFileRange = libc.func('long copy_file_range(int fd_in, void *off_in, int fd_out, void *off_out, size_t len, unsigned int flags)')

const readAsync = promisify(read)
const writeAsync = promisify(write)

const { ENXIO, EINVAL, EXDEV, ENOSYS, EOPNOTSUPP } = koffi.os.errno
const FALLBACK_ERRNOS = new Set([EXDEV, EINVAL, ENOSYS, EOPNOTSUPP])

/**
 * One copy_file_range, off the JS thread when large. Without offsets (null), file positions
 * advance as with read/write.
 */
function copyOnce (srcFd: number, srcOff: BigInt64Array | null, dstFd: number, dstOff: BigInt64Array | null, len: number): Promise<number> {
  if (len <= SYNC_LIMIT) {
    const n = Number(copyFileRange(srcFd, srcOff, dstFd, dstOff, len, 0))
    return n < 0 ? Promise.reject(sysError('copy_file_range', koffi.errno())) : Promise.resolve(n)
  }
  return new Promise((resolve, reject) => {
    copyFileRange.async(srcFd, srcOff, dstFd, dstOff, len, 0, (err: unknown, n: number) => {
      if (err !== null && err !== undefined) reject(err)
      else if (n < 0) reject(sysError('copy_file_range', koffi.errno()))
      else resolve(n)
    })
  })
}

const copyChunk = (srcFd: number, dstFd: number, len: number): Promise<number> => copyOnce(srcFd, null, dstFd, null, len)

/** The most one read, write or copy moves in Linux (MAX_RW_COUNT). */
const MAX_RW = 0x7ffff000

/**
 * copy_file_range(2) between explicit offsets: the bytes copied, fewer than asked at the
 * source's end (or past what one call moves, as in the kernel).
 */
export function copyRange (srcFd: number, srcOff: number, dstFd: number, dstOff: number, len: number): Promise<number> {
  return copyOnce(srcFd, BigInt64Array.of(BigInt(srcOff)), dstFd, BigInt64Array.of(BigInt(dstOff)), Math.min(len, MAX_RW))
}

/** Data extents of the source as [start, end) pairs, holes skipped. */
function* extents (fd: number, size: number): Generator<[number, number]> {
  let pos = 0
  while (pos < size) {
    let start: number
    try {
      start = lseek(fd, pos, SEEK_DATA)
    } catch (err) {
      const { errno } = err as SysError
      if (errno === ENXIO) return
      // Filesystems without SEEK_DATA: the whole rest is data.
      if (errno === EINVAL) { yield [pos, size]; return }
      throw err
    }
    const end = Math.min(lseek(fd, start, SEEK_HOLE), size)
    if (end > start) yield [start, end]
    pos = end
  }
}

async function bufferedRange (srcFd: number, dstFd: number, start: number, end: number): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(BUFFERED_CHUNK, end - start))
  let pos = start
  while (pos < end) {
    const n = (await readAsync(srcFd, buf, 0, Math.min(buf.length, end - pos), pos)).bytesRead
    if (n === 0) return
    let done = 0
    while (done < n) done += (await writeAsync(dstFd, buf, done, n - done, pos + done)).bytesWritten
    pos += n
  }
}

/** Returns false when the kernel cannot copy between these files and the caller should buffer. */
async function kernelRange (srcFd: number, dstFd: number, start: number, end: number, seek: boolean): Promise<boolean> {
  if (seek) {
    lseek(srcFd, start, SEEK_SET)
    lseek(dstFd, start, SEEK_SET)
  }
  let pos = start
  while (pos < end) {
    let n: number
    try {
      n = await copyChunk(srcFd, dstFd, Math.min(CHUNK, end - pos))
    } catch (err) {
      const errno = (err as { errno?: number }).errno
      if (pos === start && errno !== undefined && FALLBACK_ERRNOS.has(errno)) return false
      throw err
    }
    if (n === 0) break
    pos += n
  }
  return true
}

export interface CopyOptions {
  /**
   * Shared by the copies into one filesystem: a filesystem that refuses one reflink
   * (EOPNOTSUPP) refuses them all, and the attempt is a syscall per copy.
   */
  reflink?: { supported: boolean }
  /**
   * The source has no holes (its blocks cover its size), so it is one extent: no SEEK_DATA
   * walk, no seeks, no final truncate. Both descriptors must be at offset 0.
   */
  dense?: boolean
}

/**
 * Copies a regular file's data from srcFd into the empty file dstFd, keeping holes: a reflink
 * when the filesystem shares extents, else each data extent through copy_file_range, else
 * buffered reads and writes. The size is set last so a trailing hole survives.
 */
export async function copyData (srcFd: number, dstFd: number, size: number, opts: CopyOptions = {}): Promise<CopyMethod> {
  if (opts.reflink?.supported !== false) {
    if (ioctl(dstFd, FICLONE, srcFd) === 0) return 'reflink'
    if (koffi.errno() === EOPNOTSUPP && opts.reflink !== undefined) opts.reflink.supported = false
  }
  let method: CopyMethod = 'copy_file_range'
  const ranges = opts.dense === true ? [[0, size] as [number, number]] : extents(srcFd, size)
  for (const [start, end] of ranges) {
    if (method === 'copy_file_range' && await kernelRange(srcFd, dstFd, start, end, opts.dense !== true)) continue
    method = 'buffered'
    await bufferedRange(srcFd, dstFd, start, end)
  }
  if (opts.dense !== true || method === 'buffered') ftruncateSync(dstFd, size)
  return method
}
