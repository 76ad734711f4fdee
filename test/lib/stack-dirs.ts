import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Teardownable } from './tap.js'

/** The three directories one writable overlay mounts. */
export interface StackDirs { lower: string, upper: string, work: string }

/** Empty lower, upper and work directories in a fresh temp dir, removed when the test ends. */
export function stackDirs (t: Teardownable, prefix: string): StackDirs {
  const base = mkdtempSync(join(tmpdir(), `${prefix}-`))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const d = { lower: join(base, 'lower'), upper: join(base, 'upper'), work: join(base, 'work') }
  for (const dir of Object.values(d)) mkdirSync(dir)
  return d
}

/** A new work directory inside `d.work`, for one more mount of the same upper: no two share one. */
export function freshWork (d: StackDirs, name: string): string {
  const dir = join(d.work, name)
  mkdirSync(dir)
  return dir
}
