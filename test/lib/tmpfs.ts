import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Teardownable } from './tap.js'

export interface TmpfsOptions {
  /** Its size in bytes; tmpfs's default (half the memory) otherwise. */
  size?: number
  /** Where to mount it (made if missing, left in place after); a fresh temp dir otherwise. */
  dir?: string
}

/**
 * A tmpfs of the test's own, unmounted when the test ends, lazily: a server may still hold files
 * there. A fresh dir is not t.testdir(): tap removes that before the teardown, still mounted.
 */
export function mountTmpfs (t: Teardownable, opts: TmpfsOptions = {}): string {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'stratafs-tmpfs-'))
  mkdirSync(dir, { recursive: true })
  const size = opts.size === undefined ? [] : ['-o', `size=${opts.size}`]
  const r = spawnSync('mount', ['-t', 'tmpfs', ...size, 'tmpfs', dir], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mount -t tmpfs ${dir}: ${r.stderr.trim()}`)
  t.teardown(() => {
    spawnSync('umount', ['-l', dir])
    if (opts.dir === undefined) rmdirSync(dir)
  })
  return dir
}
