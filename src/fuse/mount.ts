import Fuse from 'fuse-native'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import type { LowerIndex } from '../overlay/lower-index.js'
import { Overlay } from '../overlay/overlay.js'
import { operations } from './operations.js'

export interface MountSpec {
  mountpoint: string
  layerDirs: string[]
  lower: LowerIndex
  upper?: { upperDir: string; workDir: string }
  metacopy?: boolean
  log: Logger
  name: string
}

export interface OverlayMount {
  readonly mountpoint: string
  readonly overlay: Overlay
  unmount (): Promise<void>
}

/** Lower layers never change and every change to a name comes through us: the kernel may cache. */
const CACHE_SECONDS = 86400

/**
 * libfuse options fuse-native has no key for ride along in `fsname`, which it passes inside the
 * one `-o` string: inode numbers are ours (use_ino), writes come 128 KiB at a time (big_writes),
 * repeated misses stay in the kernel (negative_timeout), and a non-empty mountpoint is accepted
 * as the kernel accepts it (nonempty); device nodes and setuid work as on a root overlayfs mount
 * (dev, suid). No hard_remove: libfuse then loses the path of a file
 * unlinked while open and fstat on it fails; the overlay hides those files instead.
 *
 * A read-only stack never changes: attributes and pages stay cached (kernel_cache). On a writable
 * mount, libfuse's high-level API gives each hard link its own kernel inode, so a change through
 * one name would leave the others' cached attributes and pages stale: the attributes of files
 * with several links are answered not cacheable (operations.ts), and pages are dropped when an
 * open finds the file changed (auto_cache).
 */
function fuseOptions (spec: MountSpec): Record<string, unknown> {
  const writable = spec.upper !== undefined
  const extra = [
    'use_ino', 'big_writes', 'nonempty', 'dev', 'suid', writable ? 'auto_cache' : 'kernel_cache',
    `entry_timeout=${CACHE_SECONDS}`, `negative_timeout=${CACHE_SECONDS}`, `attr_timeout=${CACHE_SECONDS}`
  ]
  if (!writable) extra.push('ro')
  return {
    fsname: `stratafs:${spec.name.replace(/[^\w.:-]/g, '_')},${extra.join(',')}`,
    subtype: 'stratafs',
    allowOther: true,
    defaultPermissions: true,
    force: true,
    mkdir: false,
    timeout: false
  }
}

/** Mounts a stack through FUSE; resolves once the kernel has completed its handshake with us. */
export async function mountOverlay (spec: MountSpec): Promise<OverlayMount> {
  const log = spec.log.child({ mount: spec.mountpoint })
  const overlay = new Overlay({ lower: spec.lower, upper: spec.upper, metacopy: spec.metacopy, log })
  let fuse: Fuse | undefined
  const ops = operations(overlay, () => fuse?.caller, log)
  const mounted = fuse = new Fuse(spec.mountpoint, ops, fuseOptions(spec))
  await new Promise<void>((resolve, reject) => {
    mounted.mount(err => {
      if (err === null || err === undefined) resolve()
      else reject(new StrataError('MOUNT_FAILED', `cannot mount ${spec.mountpoint}: ${err.message}`, { cause: err }))
    })
  })
  log.info({ layers: spec.layerDirs.length, writable: spec.upper !== undefined }, 'mounted')
  let unmounting: Promise<void> | undefined
  return {
    mountpoint: spec.mountpoint,
    overlay,
    async unmount () {
      unmounting ??= new Promise<void>((resolve, reject) => {
        mounted.unmount(err => {
          if (err === null || err === undefined) {
            overlay.close()
            log.info('unmounted')
            resolve()
          } else {
            reject(new StrataError('EBUSY', `cannot unmount ${spec.mountpoint}: ${err.message}`, { cause: err }))
          }
        })
      })
      await unmounting
    }
  }
}
