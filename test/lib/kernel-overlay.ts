import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Teardownable } from './tap.js'

/**
 * Kernel overlayfs, the oracle. The mount option string is limited to one page, which 128 layer
 * paths overflow, so the layers are reached through short numbered symlinks in a scratch dir and
 * `mount` runs with that dir as its cwd (the kernel resolves relative lowerdirs against the
 * caller's cwd and follows the links).
 */

export interface KernelOverlayOptions {
  /** Top first, as overlayfs wants them. */
  lowerDirs: string[]
  upperDir?: string
  workDir?: string
  /** Where to mount; a fresh temp dir otherwise. */
  mountpoint?: string
  /** Further mount options, e.g. 'metacopy=on'. */
  options?: string[]
}

export function mountKernelOverlay (t: Teardownable, opts: KernelOverlayOptions): string {
  if (opts.lowerDirs.length === 0) throw new Error('kernel overlay needs at least one lower dir')
  const scratch = mkdtempSync(join(tmpdir(), 'kovl-'))
  const mnt = opts.mountpoint ?? join(scratch, 'mnt')
  mkdirSync(mnt, { recursive: true })
  const links = join(scratch, 'l')
  mkdirSync(links)
  // overlayfs wants two lowers when there is no upper; an empty bottom layer changes nothing seen.
  const lowers = opts.lowerDirs.length === 1 && opts.upperDir === undefined ? [...opts.lowerDirs, join(scratch, 'empty')] : opts.lowerDirs
  if (lowers !== opts.lowerDirs) mkdirSync(join(scratch, 'empty'))
  lowers.forEach((dir, i) => symlinkSync(dir, join(links, String(i))))
  const options = [`lowerdir=${lowers.map((_, i) => String(i)).join(':')}`]
  if (opts.upperDir !== undefined) {
    if (opts.workDir === undefined) throw new Error('an upper dir needs a work dir')
    symlinkSync(opts.upperDir, join(links, 'u'))
    symlinkSync(opts.workDir, join(links, 'w'))
    options.push('upperdir=u', 'workdir=w')
  } else {
    options.push('ro')
  }
  options.push(...opts.options ?? [])
  const res = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', options.join(','), mnt], { cwd: links, encoding: 'utf8' })
  if (res.status !== 0) {
    rmSync(scratch, { recursive: true, force: true })
    throw new Error(`mount -t overlay failed: ${res.stderr.trim()}`)
  }
  t.teardown(() => {
    spawnSync('umount', [mnt], { stdio: 'ignore' })
    // Never recurse into a mount that is still there: with an upper that would delete its files.
    if (spawnSync('mountpoint', ['-q', mnt]).status === 0) spawnSync('umount', ['-l', mnt], { stdio: 'ignore' })
    if (spawnSync('mountpoint', ['-q', mnt]).status !== 0) rmSync(scratch, { recursive: true, force: true })
  })
  return mnt
}
