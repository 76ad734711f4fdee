import { createRequire } from 'node:module'
import type Koffi from 'koffi'

/**
 * Required, not imported: a bundle hoists every import of an outside module to its start, where
 * koffi (7 ms) would load for every CLI command, `ps` and `--help` included; required here, it
 * loads with the first module that binds a function.
 */
const koffi = createRequire(import.meta.url)('koffi') as typeof Koffi

/**
 * The one handle on glibc. Every binding in src/sys declares its functions on it; callers never
 * see koffi. Functions return -1 and leave errno set, which `sysError` turns into an Error that
 * looks like Node's own fs errors (`code`, `errno`, `syscall`, `path`), so `errorCode(err)` works.
 */
export const libc = koffi.load('libc.so.6')

export { koffi }

const errnoNames = new Map<number, string>()
for (const [name, value] of Object.entries(koffi.os.errno)) {
  // Aliases share a number; the alphabetically first (EAGAIN, EDEADLK, ENOTSUP) is also the name
  // Node's fs reports, so both kinds of error compare equal.
  if (!errnoNames.has(value)) errnoNames.set(value, name)
}

export interface SysError extends Error {
  code: string
  errno: number
  syscall: string
  path?: string
}

export function errnoName (errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`
}

export function sysError (syscall: string, errno: number, path?: string): SysError {
  const code = errnoName(errno)
  const where = path === undefined ? '' : ` ${path}`
  const err = new Error(`${syscall}${where}: ${code}`) as SysError
  err.code = code
  err.errno = errno
  err.syscall = syscall
  if (path !== undefined) err.path = path
  return err
}

/** Reads errno right after a failed call; anything JS does in between may clobber it. */
export function check (ret: number, syscall: string, path?: string): number {
  if (ret < 0) throw sysError(syscall, koffi.errno(), path)
  return ret
}

export const AT_FDCWD = -100
export const AT_SYMLINK_NOFOLLOW = 0x100
