import { check, libc } from './libc.js'

const flockFn = libc.func('int flock(int fd, int operation)')
const LOCK_EX = 2
const LOCK_NB = 4

/**
 * flock(2) LOCK_EX|LOCK_NB: whether this open file now holds the exclusive lock (false: another
 * does). It lasts until every descriptor of the open file is closed, also when the process dies.
 */
export function tryLockExclusive (fd: number): boolean {
  try {
    check(flockFn(fd, LOCK_EX | LOCK_NB), 'flock')
    return true
  } catch (err) {
    // EWOULDBLOCK, which is EAGAIN's number and so goes by that name.
    if ((err as { code?: string }).code === 'EAGAIN') return false
    throw err
  }
}
