import { check, libc } from './libc.js'

export const SEEK_SET = 0
export const SEEK_DATA = 3
export const SEEK_HOLE = 4

const lseekFn = libc.func('int64_t lseek(int fd, int64_t offset, int whence)')

/**
 * lseek(2) with the whences Node lacks: the new offset. SEEK_DATA and SEEK_HOLE answer ENXIO at
 * or past the end, and EINVAL on filesystems without them.
 */
export function lseek (fd: number, offset: number, whence: number): number {
  return check(Number(lseekFn(fd, offset, whence)), 'lseek')
}
