import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { DiffChange } from './api-types.js'

const WH_PREFIX = '.wh.'
const OPAQUE_MARKER = '.wh..wh..opq'

/**
 * `docker diff` of a container: walks its upper dir. A whiteout is a deletion; a name the image
 * has is a change; anything else is an addition. Every directory in the upper is the parent of
 * a change, so the ones the image has come out as `C`, as docker reports them. Sorted by path.
 */
export async function diffUpper (upperDir: string, inLower: (path: string) => Promise<boolean>): Promise<DiffChange[]> {
  const changes: DiffChange[] = []
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = await readdir(dir)
    for (const name of names) {
      if (name === OPAQUE_MARKER) continue
      if (name.startsWith(WH_PREFIX)) {
        changes.push({ kind: 'D', path: `${rel}/${name.slice(WH_PREFIX.length)}` })
        continue
      }
      const path = `${rel}/${name}`
      const st = await lstat(join(dir, name))
      if (st.isCharacterDevice() && st.rdev === 0) {
        changes.push({ kind: 'D', path })
        continue
      }
      changes.push({ kind: await inLower(path) ? 'C' : 'A', path })
      if (st.isDirectory()) await walk(join(dir, name), path)
    }
  }
  await walk(upperDir, '')
  return changes.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
}
