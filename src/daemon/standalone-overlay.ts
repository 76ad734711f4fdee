import { readFileSync, realpathSync, statSync } from 'node:fs'
import { StrataError } from '../errors.js'
import type { Logger } from 'pino'
import { mountOverlay, type OverlayMount } from '../fuse/mount.js'
import { LowerIndex } from '../overlay/lower-index.js'
import { standaloneLowerIndex } from './standalone-index.js'

export interface StandaloneSpec {
  /** Bottom first. */
  lowerDirs: string[]
  upper?: { upperDir: string; workDir: string }
  metacopy: boolean
  mountpoint: string
  log: Logger
}

const WATCH_MS = 1000

/**
 * A mount of plain directories with no daemon and no store, the way fuse-overlayfs is used. With
 * an upper, the lower index is kept in LevelDB inside the work dir for the next mount.
 * It ends on SIGTERM/SIGINT, and also when someone else unmounts it (`fusermount -u`), which
 * libfuse 2 does not report: the mount table is watched instead.
 */
export async function serveStandalone (spec: StandaloneSpec): Promise<{ mount: OverlayMount, done: Promise<void> }> {
  for (const [what, dir] of [...spec.lowerDirs.map(d => ['lowerdir', d]), ['upperdir', spec.upper?.upperDir], ['workdir', spec.upper?.workDir]]) {
    if (dir !== undefined && !statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
      throw new StrataError('NOT_FOUND', `${what} ${dir} is not a directory`)
    }
  }
  // A layer given as a symlink is followed, as kernel overlayfs follows it.
  const lowerDirs = spec.lowerDirs.map(d => realpathSync(d))
  const lower = spec.upper === undefined
    ? await builtInMemory(lowerDirs, spec.log)
    : await standaloneLowerIndex(lowerDirs, spec.upper.workDir, spec.log)
  const mount = await mountOverlay({
    mountpoint: spec.mountpoint,
    layerDirs: lowerDirs,
    lower,
    upper: spec.upper,
    metacopy: spec.metacopy,
    log: spec.log,
    name: 'overlay'
  })
  const done = new Promise<void>(resolve => {
    const stop = (): void => {
      clearInterval(timer)
      mount.unmount().catch(err => spec.log.error({ err }, 'unmount failed')).finally(resolve)
    }
    const timer = setInterval(() => {
      if (!isMounted(spec.mountpoint)) {
        clearInterval(timer)
        spec.log.info('unmounted from outside')
        resolve()
      }
    }, WATCH_MS)
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
  })
  return { mount, done }
}

/** A read-only mount has no work dir to keep an index in. */
async function builtInMemory (lowerDirs: readonly string[], log: Logger): Promise<LowerIndex> {
  const started = performance.now()
  const lower = await LowerIndex.build(lowerDirs)
  log.info({ layers: lowerDirs.length, entries: lower.size, ms: Math.round(performance.now() - started) }, 'lower index built')
  return lower
}

/** Reads the mount table, never the mountpoint itself: this process serves it. */
export function isMounted (mountpoint: string): boolean {
  const escaped = mountpoint.replace(/[ \t\n\\]/g, c => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'))
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(line => line.split(' ')[4] === escaped)
}
