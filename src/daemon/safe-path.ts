import { lstat, readlink } from 'node:fs/promises'
import { dirname, isAbsolute, resolve, sep } from 'node:path'
import { StrataError, errorCode } from '../errors.js'
import { isAtOrBelow } from '../sys/mountinfo.js'

/**
 * Resolves symlinks in `path` one component at a time and refuses, before any fs call on it,
 * every intermediate path that lies in one of the daemon's own mounts: a syscall from the
 * serving process on its own FUSE mount deadlocks it. `realpath` would make those calls first
 * and ask questions after.
 */
export async function resolveOutsideMounts (path: string, ownMounts: () => Iterable<string>, what: string): Promise<string> {
  if (typeof path !== 'string' || !isAbsolute(path)) throw new StrataError('BAD_REQUEST', `${what} must be an absolute path`)
  const guard = (p: string): void => {
    for (const mp of ownMounts()) {
      if (p === mp && resolve(path) === mp) throw new StrataError('CONFLICT', `${what} ${path} is already a stratafs mountpoint`)
      if (isAtOrBelow(p, mp)) throw new StrataError('BAD_REQUEST', `${what} ${path} is inside the stratafs mount ${mp}; the daemon cannot use its own mounts`)
    }
  }
  let pending = resolve(path).split(sep).filter(Boolean)
  let done = '/'
  for (let hops = 0; pending.length > 0;) {
    const next = resolve(done, pending.shift()!)
    guard(next)
    let st
    try {
      st = await lstat(next)
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return resolve(next, ...pending)
      throw err
    }
    if (!st.isSymbolicLink()) {
      done = next
      continue
    }
    if (++hops > 40) throw new StrataError('ELOOP', `too many symbolic links in ${path}`)
    const target = await readlink(next)
    pending = [...resolve(dirname(next), target).split(sep).filter(Boolean), ...pending]
    done = '/'
  }
  guard(done)
  return done
}
