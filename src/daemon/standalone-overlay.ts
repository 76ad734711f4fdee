import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { Logger } from 'pino'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import type { IdMappings } from '../fuse/id-mapping.js'
import { mountOverlay, type OverlayMount } from '../fuse/mount.js'
import { builtInMemory, standaloneLowerIndex } from './standalone-index.js'
import { claimUpper } from './upper-claim.js'
import { checkDirs } from './standalone-dirs.js'

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
  const lowerDirs = await checkDirs(spec.lowerDirs, spec.upper, spec.mountpoint)
  const claim = spec.upper === undefined ? undefined : await claimUpper(spec.upper, spec.log)
  try {
    return await serveClaimed(spec, lowerDirs, () => claim?.release())
  } catch (err) {
    claim?.release()
    throw err
  }
}

/** `lowerDirs`: the spec's, symlinks resolved. */
async function serveClaimed (spec: StandaloneSpec, lowerDirs: string[], release: () => void): Promise<{ mount: OverlayMount, done: Promise<void> }> {
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
