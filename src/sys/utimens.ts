import type { Timespec } from '../layers/entry.js'
import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, check, libc } from './libc.js'

/** Special tv_nsec values understood by utimensat(2). */
export const UTIME_NOW = (1 << 30) - 1
export const UTIME_OMIT = (1 << 30) - 2

const utimensat = libc.func('int utimensat(int dirfd, const char *path, const int64_t *times, int flags)')
const futimensFn = libc.func('int futimens(int fd, const int64_t *times)')

const times = new BigInt64Array(4)

function fill (atime: Timespec, mtime: Timespec): BigInt64Array {
  times[0] = BigInt(atime[0])
  times[1] = BigInt(atime[1])
  times[2] = BigInt(mtime[0])
  times[3] = BigInt(mtime[1])
  return times
}

/** Sets atime and mtime of the path itself (a symlink is not followed), to the nanosecond. */
export function lutimens (path: string, atime: Timespec, mtime: Timespec): void {
  check(utimensat(AT_FDCWD, path, fill(atime, mtime), AT_SYMLINK_NOFOLLOW), 'utimensat', path)
}

export function futimens (fd: number, atime: Timespec, mtime: Timespec): void {
  check(futimensFn(fd, fill(atime, mtime)), 'futimens')
}
