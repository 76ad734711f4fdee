import { accessSync, constants, realpathSync, statSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { StrataError, errorCode } from '../errors.js'
import type { Logger } from 'pino'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import type { IdMappings } from '../fuse/id-mapping.js'
import { mountOverlay, type OverlayMount } from '../fuse/mount.js'
import { builtInMemory, standaloneLowerIndex } from './standalone-index.js'
import { claimUpper } from './upper-claim.js'
import { isAtOrBelow, mountOf, readMountInfo } from './mountinfo.js'

export interface StandaloneSpec {
  /** Bottom first. */
  lowerDirs: string[]
  upper?: { upperDir: string; workDir: string }
  metacopy: boolean
  xattrs: OverlayXattrs
  ids?: IdMappings
  volatile: boolean
  mountpoint: string
  log: Logger
}

/**
 * A mount of plain directories with no daemon and no store, the way fuse-overlayfs is used. With
 * an upper, the lower index is kept in LevelDB inside the work dir for the next mount.
 * It ends on SIGTERM/SIGINT, and also when someone else unmounts it (`fusermount -u`).
 */
export async function serveStandalone (spec: StandaloneSpec): Promise<{ mount: OverlayMount, done: Promise<void> }> {
  for (const [what, dir] of [...spec.lowerDirs.map(d => ['lowerdir', d]), ['upperdir', spec.upper?.upperDir], ['workdir', spec.upper?.workDir]]) {
    if (dir !== undefined && !statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
      throw new StrataError('NOT_FOUND', `${what} ${dir} is not a directory`)
    }
  }
  // One layer twice, or one inside another, as the kernel refuses them.
  const lowers = spec.lowerDirs.map(d => realpathSync(d))
  lowers.forEach((lower, i) => {
    for (const other of lowers.slice(i + 1)) {
      if (lower === other) throw new StrataError('BAD_REQUEST', `conflicting lowerdir path ${lower}: it is given twice`)
      if (overlapping(lower, other)) throw new StrataError('BAD_REQUEST', `overlapping lowerdir path ${lower}: it and ${other} contain one another`)
    }
  })
  if (spec.upper !== undefined) {
    const upper = realpathSync(spec.upper.upperDir)
    const work = realpathSync(spec.upper.workDir)
    if (overlapping(upper, work)) throw new StrataError('BAD_REQUEST', 'workdir and upperdir must be separate subtrees')
    // What the mount writes would show through a lower layer, as the kernel refuses it.
    for (const lower of lowers) {
      for (const [what, dir] of [['upperdir', upper], ['workdir', work]] as const) {
        if (lower === dir) throw new StrataError('BAD_REQUEST', `conflicting lowerdir path ${lower}: it is the ${what}`)
        if (isAtOrBelow(lower, dir)) throw new StrataError('BAD_REQUEST', `overlapping lowerdir path ${lower}: it is inside the ${what}`)
      }
    }
    // Every copy-up renames from the work dir into the upper, which fails (EXDEV) across mounts.
    const table = await readMountInfo()
    if (mountOf(upper, table)?.id !== mountOf(work, table)?.id) throw new StrataError('BAD_REQUEST', 'workdir and upperdir must reside under the same mount')
  }
  for (const [what, dir] of [['upperdir', spec.upper?.upperDir], ['workdir', spec.upper?.workDir]]) {
    if (dir !== undefined && onReadOnlyFs(dir)) throw new StrataError('EROFS', `${what} ${dir} is on a read-only filesystem`)
  }
  // The server reaches its layers by path: below its own mountpoint, a path would lead back into
  // the mount it serves, and the server would wait on itself. Kernel overlayfs allows this.
  const mountpoint = resolvedMountpoint(spec.mountpoint)
  for (const [what, dir] of [...spec.lowerDirs.map(d => ['lowerdir', d] as const), ['upperdir', spec.upper?.upperDir], ['workdir', spec.upper?.workDir]] as const) {
    const real = dir === undefined ? undefined : realpathSync(dir)
    if (mountpoint !== undefined && real !== undefined && isAtOrBelow(mountpoint, real)) {
      throw new StrataError('BAD_REQUEST', `mountpoint ${spec.mountpoint} ${mountpoint === real ? 'is' : 'lies inside'} the ${what} ${dir}: the server would reach its own mount through it`)
    }
  }
  const claim = spec.upper === undefined ? undefined : await claimUpper(spec.upper, spec.log)
  try {
    return await serveClaimed(spec, () => claim?.release())
  } catch (err) {
    claim?.release()
    throw err
  }
}

async function serveClaimed (spec: StandaloneSpec, release: () => void): Promise<{ mount: OverlayMount, done: Promise<void> }> {
  // A layer given as a symlink is followed, as kernel overlayfs follows it.
  const lowerDirs = spec.lowerDirs.map(d => realpathSync(d))
  const lower = spec.upper === undefined
    ? await builtInMemory(lowerDirs, spec.xattrs, spec.log)
    : await standaloneLowerIndex(lowerDirs, spec.upper.workDir, spec.xattrs, spec.log)
  if (lower.size >= COLLECT_FROM_NAMES) collectGarbage()
  const mount = await mountOverlay({
    mountpoint: spec.mountpoint,
    layerDirs: lowerDirs,
    lower,
    upper: spec.upper,
    metacopy: spec.metacopy,
    xattrs: spec.xattrs,
    ids: spec.ids,
    volatile: spec.volatile,
    log: spec.log,
    name: 'overlay'
  })
  const done = new Promise<void>(resolve => {
    const stop = (): void => {
      mount.unmount().catch(err => spec.log.error({ err }, 'unmount failed')).finally(() => {
        release()
        resolve()
      })
    }
    void mount.ended.then(() => {
      spec.log.info('unmounted from outside')
      stop()
    })
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
  })
  return { mount, done }
}

/** Whether one of two real paths is the other or inside it. */
function overlapping (a: string, b: string): boolean {
  return a === b || a.startsWith(b + '/') || b.startsWith(a + '/')
}

/**
 * Walking the layers leaves garbage several times the index's size, which V8 keeps resident until
 * the mount has idled for a while. Collected before serving (16 ms for /usr, 138,632 names), the
 * server of /usr holds 119 MB instead of 175; a small index leaves too little to matter.
 */
const COLLECT_FROM_NAMES = 20_000

/** A full collection, however the server was started: no `--expose-gc` on its command line needed. */
function collectGarbage (): void {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  gc()
}

/** Where a mount on `path` would be, its parent's symlinks resolved; undefined when the parent is missing (the mount says so). */
function resolvedMountpoint (path: string): string | undefined {
  try {
    return join(realpathSync(dirname(path)), basename(path))
  } catch {
    return undefined
  }
}

/** access(2) answers EROFS for write access on a read-only filesystem, whoever asks. */
function onReadOnlyFs (dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK)
    return false
  } catch (err) {
    return errorCode(err) === 'EROFS'
  }
}
