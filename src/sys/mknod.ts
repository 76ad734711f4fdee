import { check, libc } from './libc.js'

const mknodFn = libc.func('int mknod(const char *path, uint32_t mode, uint64_t dev)')

/** `mode` carries the type (S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFREG) and the permissions. */
export function mknod (path: string, mode: number, rdev: number): void {
  check(mknodFn(path, mode, rdev), 'mknod', path)
}

/**
 * glibc's gnu_dev_makedev/major/minor in doubles rather than BigInt: every device number Linux
 * hands out today (12-bit majors, 20-bit minors) stays far below 2^53.
 */
export function makedev (major: number, minor: number): number {
  return (minor & 0xff) + (major & 0xfff) * 0x100 + Math.floor(minor / 0x100) * 0x100000 +
    Math.floor(major / 0x1000) * 0x1000 * 0x100000000
}

export function major (dev: number): number {
  return ((dev >>> 8) & 0xfff) + ((Math.floor(dev / 0x100000000) & 0xfffff000) >>> 0)
}

export function minor (dev: number): number {
  return (dev & 0xff) + ((Math.floor(dev / 0x1000) & 0xffffff00) >>> 0)
}
