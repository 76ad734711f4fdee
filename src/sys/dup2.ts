import { check, libc } from './libc.js'

const dup2Fn = libc.func('int dup2(int oldfd, int newfd)')

/** dup2(2): `to` becomes another descriptor of `from`'s open file, keeping its number. */
export function dup2 (from: number, to: number): void {
  check(dup2Fn(from, to), 'dup2')
}
