import { spawnSync } from 'node:child_process'
import { statSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Logger } from 'pino'
import { errorCode, StrataError } from '../errors.js'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import type { LowerIndex } from '../overlay/lower-index.js'
import { Overlay } from '../overlay/overlay.js'
import type { IdMappings } from './id-mapping.js'
import { operations } from './operations.js'
import { FuseSession } from './session.js'

export interface MountSpec {
  mountpoint: string
  layerDirs: string[]
  lower: LowerIndex
  upper?: { upperDir: string; workDir: string }
  metacopy?: boolean
  xattrs?: OverlayXattrs
  /** How stored ids show through the mount (fuse-overlayfs's uidmapping/gidmapping). */
  ids?: IdMappings
  volatile?: boolean
  log: Logger
  name: string
}

export interface OverlayMount {
  readonly mountpoint: string
  readonly overlay: Overlay
  /** Settles when someone else ends the mount (`fusermount -u`, `umount`). */
  readonly ended: Promise<void>
  unmount (): Promise<void>
}

/**
 * Device nodes and setuid work as on a root overlayfs mount (dev, suid); the kernel checks
 * permissions from our modes (default_permissions, which allow_other needs, or anyone could write
 * root's files).
 */
function mountOptions (spec: MountSpec): string[] {
  const opts = [
    `fsname=stratafs:${spec.name.replace(/[^\w.:-]/g, '_')}`, 'subtype=stratafs',
    'allow_other', 'default_permissions', 'dev', 'suid'
  ]
  if (spec.upper === undefined) opts.push('ro')
  return opts
}

/**
 * A mountpoint a killed server left behind answers ENOTCONN: detach it, as any FUSE mount would
 * have to be before mounting again. A live mount there is refused.
 */
function prepareMountpoint (mountpoint: string): void {
  try {
    statSync(mountpoint)
  } catch (err) {
    if (errorCode(err) !== 'ENOTCONN') throw new StrataError('MOUNT_FAILED', `cannot mount ${mountpoint}: ${(err as Error).message}`)
    spawnSync('fusermount', ['-u', '-z', mountpoint], { stdio: 'ignore' })
  }
  const st = statSync(mountpoint, { throwIfNoEntry: false })
  if (st === undefined) throw new StrataError('MOUNT_FAILED', `cannot mount ${mountpoint}: it does not exist`)
  if (!st.isDirectory()) throw new StrataError('MOUNT_FAILED', `cannot mount ${mountpoint}: not a directory`)
  if (statSync(dirname(mountpoint)).dev !== st.dev) throw new StrataError('MOUNT_FAILED', `cannot mount ${mountpoint}: already a mountpoint`)
}

/** Mounts a stack through FUSE; resolves once the kernel has completed its handshake with us. */
export async function mountOverlay (spec: MountSpec): Promise<OverlayMount> {
  const log = spec.log.child({ mount: spec.mountpoint })
  const overlay = new Overlay({ lower: spec.lower, upper: spec.upper, metacopy: spec.metacopy, xattrs: spec.xattrs, volatile: spec.volatile, log })
  prepareMountpoint(spec.mountpoint)
  let session: FuseSession | undefined
  let initialised!: (err?: unknown) => void
  let endedOutside!: () => void
  const ready = new Promise<void>((resolve, reject) => {
    initialised = err => err === undefined ? resolve() : reject(err)
  })
  const ended = new Promise<void>(resolve => { endedOutside = resolve })
  const handlers = operations(overlay, () => session!, log, { initialised, ended: endedOutside }, spec.ids)
  try {
    session = new FuseSession(spec.mountpoint, mountOptions(spec), handlers)
  } catch (err) {
    throw new StrataError('MOUNT_FAILED', `cannot mount ${spec.mountpoint}: ${(err as Error).message}`, { cause: err })
  }
  const mounted = session
  const unmount = async (): Promise<void> => {
    mounted.unmount()
    overlay.close()
    log.info('unmounted')
  }
  try {
    await ready
  } catch (err) {
    await unmount()
    throw new StrataError('MOUNT_FAILED', `cannot mount ${spec.mountpoint}: ${(err as Error).message}`, { cause: err })
  }
  log.info({ layers: spec.layerDirs.length, writable: spec.upper !== undefined }, 'mounted')
  let unmounting: Promise<void> | undefined
  return {
    mountpoint: spec.mountpoint,
    overlay,
    ended,
    async unmount () {
      unmounting ??= unmount()
      await unmounting
    }
  }
}
