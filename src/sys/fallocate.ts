import { check, libc } from './libc.js'

const fallocateFn = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t length)')

/** fallocate(2)'s mode bits (linux/falloc.h). */
export const FALLOC_FL_KEEP_SIZE = 0x01
export const FALLOC_FL_PUNCH_HOLE = 0x02

/** fallocate(2), which Node does not offer; `mode` as the kernel's FALLOC_FL_* bits. */
export function fallocate (fd: number, mode: number, offset: number, length: number): void {
  check(fallocateFn(fd, mode, offset, length), 'fallocate')
}
