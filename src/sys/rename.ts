import { AT_FDCWD, check, libc } from './libc.js'

export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
/** Leaves a char 0/0 device (an overlayfs whiteout) at the source; needs CAP_MKNOD. */
export const RENAME_WHITEOUT = 4

const renameat2Fn = libc.func('int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)')

export function renameat2 (from: string, to: string, flags: number): void {
  check(renameat2Fn(AT_FDCWD, from, AT_FDCWD, to, flags), 'renameat2', from)
}
