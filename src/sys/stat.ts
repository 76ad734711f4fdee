import type { Timespec } from '../layers/entry.js'
import { check, koffi, libc, sysError } from './libc.js'

const { ENOENT, ENOTDIR } = koffi.os.errno

export interface Stat {
  dev: number
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  rdev: number
  size: number
  blksize: number
  blocks: number
  atime: Timespec
  mtime: Timespec
  ctime: Timespec
}

// struct stat as glibc lays it out on x86_64 (144 bytes). Node's fs.lstat rounds times through a
// double in milliseconds (bigint mode is several times slower), hence this binding.
export const STAT_SIZE = 144
const buf = Buffer.alloc(STAT_SIZE)
const view = new DataView(buf.buffer, buf.byteOffset, STAT_SIZE)

const lstatFn = libc.func('int lstat(const char *path, void *buf)')
const fstatFn = libc.func('int fstat(int fd, void *buf)')

function u64 (v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * 0x1_0000_0000
}

function i64 (v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getInt32(off + 4, true) * 0x1_0000_0000
}

/** The struct stat at `b` of `v`. */
export function decodeStat (v: DataView, b: number): Stat {
  return {
    dev: u64(v, b),
    ino: u64(v, b + 8),
    nlink: u64(v, b + 16),
    mode: v.getUint32(b + 24, true),
    uid: v.getUint32(b + 28, true),
    gid: v.getUint32(b + 32, true),
    rdev: u64(v, b + 40),
    size: i64(v, b + 48),
    blksize: i64(v, b + 56),
    blocks: i64(v, b + 64),
    atime: [i64(v, b + 72), i64(v, b + 80)],
    mtime: [i64(v, b + 88), i64(v, b + 96)],
    ctime: [i64(v, b + 104), i64(v, b + 112)]
  }
}

const decode = (): Stat => decodeStat(view, 0)

/** lstat(2) with nanosecond times. Shares one buffer: the result is decoded before returning. */
export function lstat (path: string): Stat {
  check(lstatFn(path, buf), 'lstat', path)
  return decode()
}

/**
 * lstat(2) for a path that may well not exist: undefined for ENOENT and ENOTDIR, with no Error
 * built for them (a lookup below the upper misses far more often than it hits).
 */
export function lstatIfExists (path: string): Stat | undefined {
  if (lstatFn(path, buf) < 0) {
    const errno = koffi.errno()
    if (errno === ENOENT || errno === ENOTDIR) return undefined
    throw sysError('lstat', errno, path)
  }
  return decode()
}

export function fstat (fd: number): Stat {
  check(fstatFn(fd, buf), 'fstat')
  return decode()
}
