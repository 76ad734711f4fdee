import { check, koffi, libc, sysError } from './libc.js'

const lget = libc.func('long lgetxattr(const char *path, const char *name, void *value, size_t size)')
const fget = libc.func('long fgetxattr(int fd, const char *name, void *value, size_t size)')
const lset = libc.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)')
const fset = libc.func('int fsetxattr(int fd, const char *name, const void *value, size_t size, int flags)')
const llist = libc.func('long llistxattr(const char *path, void *list, size_t size)')
const flist = libc.func('long flistxattr(int fd, void *list, size_t size)')
const lremove = libc.func('int lremovexattr(const char *path, const char *name)')
const fremove = libc.func('int fremovexattr(int fd, const char *name)')

export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2

const ENODATA = koffi.os.errno.ENODATA
const ERANGE = koffi.os.errno.ERANGE

/**
 * Probe the size, then read; the value may grow between the two calls (ERANGE), so go round
 * again. A small first buffer saves the probe for the common short values.
 */
function readSized (read: (buf: Buffer | null, size: number) => number, syscall: string, where?: string): Buffer | undefined {
  let buf = Buffer.allocUnsafe(256)
  for (;;) {
    const n = read(buf, buf.length)
    if (n >= 0) return buf.subarray(0, n)
    const errno = koffi.errno()
    if (errno === ENODATA) return undefined
    if (errno !== ERANGE) throw sysError(syscall, errno, where)
    const size = read(null, 0)
    if (size < 0) {
      const again = koffi.errno()
      if (again === ENODATA) return undefined
      throw sysError(syscall, again, where)
    }
    buf = Buffer.allocUnsafe(Math.max(size, 1))
  }
}

function splitNames (list: Buffer | undefined): string[] {
  if (list === undefined || list.length === 0) return []
  const names = list.toString().split('\0')
  names.pop()
  return names
}

/** The value, or undefined when the attribute does not exist (ENODATA). */
export function lgetxattr (path: string, name: string): Buffer | undefined {
  return readSized((buf, size) => lget(path, name, buf, size), 'lgetxattr', path)
}

export function fgetxattr (fd: number, name: string): Buffer | undefined {
  return readSized((buf, size) => fget(fd, name, buf, size), 'fgetxattr')
}

export function lsetxattr (path: string, name: string, value: Buffer, flags = 0): void {
  check(lset(path, name, value, value.length, flags), 'lsetxattr', path)
}

export function fsetxattr (fd: number, name: string, value: Buffer, flags = 0): void {
  check(fset(fd, name, value, value.length, flags), 'fsetxattr')
}

export function llistxattr (path: string): string[] {
  return splitNames(readSized((buf, size) => llist(path, buf, size), 'llistxattr', path))
}

export function flistxattr (fd: number): string[] {
  return splitNames(readSized((buf, size) => flist(fd, buf, size), 'flistxattr'))
}

export function lremovexattr (path: string, name: string): void {
  check(lremove(path, name), 'lremovexattr', path)
}

export function fremovexattr (fd: number, name: string): void {
  check(fremove(fd, name), 'fremovexattr')
}
