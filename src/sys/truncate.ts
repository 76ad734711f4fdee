import { check, libc } from './libc.js'

const truncateFn = libc.func('int truncate(const char *path, int64_t length)')

/** truncate(2): one syscall, where Node's fs.truncateSync opens, truncates and closes. */
export function truncate (path: string, length: number): void {
  check(truncateFn(path, length), 'truncate', path)
}
