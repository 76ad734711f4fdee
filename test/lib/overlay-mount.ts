import { spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cliMain } from './daemon.js'
import type { Teardownable } from './tap.js'

/**
 * stratafs mounted straight on plain directories, the way fuse-overlayfs is: `stratafs overlay -o
 * lowerdir=…,upperdir=…,workdir=… MNT` returns once the mount answers and serves from a process of
 * its own, so the test process is free to use the mount with blocking syscalls.
 */

export interface StratafsOverlayOptions {
  /** Top first, as overlayfs wants them. */
  lowerDirs: string[]
  upperDir?: string
  workDir?: string
  /** Where to mount; a fresh temp dir otherwise. */
  mountpoint?: string
  /** Seconds to wait for the command (it returns when the mount answers). */
  timeoutSec?: number
  /** Further mount options, e.g. 'uidmapping=0:100000:65536'. */
  options?: string[]
}

export function isMounted (mnt: string): boolean {
  return spawnSync('mountpoint', ['-q', mnt]).status === 0
}

/**
 * `fusermount -u`, then `umount -l` if that left the mount in place (busy, or a server that is
 * gone). Returns what `fusermount -u` said when it did not succeed cleanly.
 */
export function unmountFuse (mnt: string): string | undefined {
  if (!isMounted(mnt)) return undefined
  const res = spawnSync('fusermount', ['-u', mnt], { encoding: 'utf8' })
  if (res.status === 0 && !isMounted(mnt)) return undefined
  spawnSync('umount', ['-l', mnt], { stdio: 'ignore' })
  return `fusermount -u ${mnt}: ${res.stderr.trim() || `exit ${String(res.status)}`}`
}

/** The pid of the server of `mnt` (a mount with `mnt` last on its command line), or '' when none runs. */
export function serverPid (mnt: string): string {
  return spawnSync('pgrep', ['-f', `overlay-main.js -f .*${mnt}$`], { encoding: 'utf8' }).stdout.trim()
}

export function mountStratafs (t: Teardownable, opts: StratafsOverlayOptions): string {
  if (!existsSync(cliMain)) throw new Error(`${cliMain} is missing: run \`npm run build\` first`)
  const scratch = mkdtempSync(join(tmpdir(), 'sovl-'))
  const mnt = opts.mountpoint ?? join(scratch, 'mnt')
  mkdirSync(mnt, { recursive: true })
  const options = [`lowerdir=${opts.lowerDirs.join(':')}`]
  if (opts.upperDir !== undefined) {
    if (opts.workDir === undefined) throw new Error('an upper dir needs a work dir')
    options.push(`upperdir=${opts.upperDir}`, `workdir=${opts.workDir}`)
  }
  options.push(...opts.options ?? [])
  t.teardown(() => {
    unmountFuse(mnt)
    if (!isMounted(mnt)) rmSync(scratch, { recursive: true, force: true })
  })
  const env = { ...process.env, STRATAFS_LOG: process.env.STRATAFS_LOG ?? 'warn' }
  // The server left in the background inherits the command's output: a file, not a pipe that
  // would keep spawnSync waiting for as long as the mount lives.
  const logPath = join(scratch, 'overlay.log')
  const log = openSync(logPath, 'w')
  let res
  try {
    res = spawnSync(process.execPath, [cliMain, 'overlay', '-o', options.join(','), mnt], {
      env, timeout: (opts.timeoutSec ?? 30) * 1000, stdio: ['ignore', log, log]
    })
  } finally {
    closeSync(log)
  }
  if (res.status !== 0 || !isMounted(mnt)) {
    unmountFuse(mnt)
    const out = readFileSync(logPath, 'utf8').trim()
    throw new Error(`stratafs overlay -o ${options.join(',')} failed (exit ${String(res.status)}${res.signal !== null ? `, ${res.signal}` : ''}): ${out}`)
  }
  return mnt
}
