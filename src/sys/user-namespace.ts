import { readFileSync } from 'node:fs'

/**
 * Whether this process runs in the initial user namespace, whose uid map is the identity over
 * every id. Outside it, even a process that is root in its own namespace lacks CAP_SYS_ADMIN
 * where it counts for `trusted.*` xattrs, as in a rootless container engine's namespace.
 */
export function inInitialUserNamespace (): boolean {
  const map = readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/)
  return map.length === 3 && map[0] === '0' && map[1] === '0' && map[2] === '4294967295'
}
