import { createRequire } from 'node:module'
import { sysError } from './libc.js'
import { decodeStat, STAT_SIZE, type Stat } from './stat.js'

/** native/dir-stats.c, built by scripts/setup.sh: a listing as bytes, or -errno. */
const native = createRequire(import.meta.url)('../../native/build/Release/dir_stats.node') as {
  listDir (path: string): Buffer | number
}

export interface DirChild {
  name: string
  /** Its lstat, taken as it was listed. */
  st: Stat
}

/**
 * The children of directory `path` (not followed if a symlink) with their lstat, in byte order
 * of their names: one call per directory instead of a walk of every child's whole path.
 */
export function listDir (path: string): DirChild[] {
  const out = native.listDir(path)
  if (typeof out === 'number') throw sysError('scandir', -out, path)
  const view = new DataView(out.buffer, out.byteOffset, out.length)
  const children: DirChild[] = []
  for (let p = 0; p < out.length;) {
    const len = view.getUint16(p, true)
    children.push({ name: out.toString('utf8', p + 2, p + 2 + len), st: decodeStat(view, p + 2 + len) })
    p += 2 + len + STAT_SIZE
  }
  return children
}
