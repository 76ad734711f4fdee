import { spawnSync } from 'node:child_process'
import { realpath, stat } from 'node:fs/promises'
import { StrataError, errorCode } from '../errors.js'
import { mountOverlay, type OverlayMount } from '../fuse/mount.js'
import type { Logger } from '../log.js'
import type { ContainerRecord } from '../store/records.js'
import type { Store } from '../store/store.js'
import type { MountRequest } from './api-types.js'
import type { LowerIndexes } from './lower-indexes.js'
import { isAtOrBelow, readMountInfo } from '../sys/mountinfo.js'
import { resolveOutsideMounts } from './safe-path.js'

interface Active { container: ContainerRecord; overlay: OverlayMount }

/**
 * The daemon's mount table. Mountpoints are reserved before the first await, so two requests
 * for one mountpoint or one container cannot both get through validation.
 */
export class Mounts {
  private readonly active = new Map<string, Active>()
  private readonly reserved = new Set<string>()

  constructor (private readonly store: Store, private readonly indexes: LowerIndexes, private readonly log: Logger) {}

  /** Mountpoints this process serves, pending ones included: paths it must never touch. */
  * own (): Iterable<string> {
    yield * this.active.keys()
    yield * this.reserved
  }

  isMounted (containerId: string): boolean {
    for (const a of this.active.values()) if (a.container.id === containerId) return true
    return false
  }

  async mount (req: MountRequest): Promise<ContainerRecord> {
    const image = await this.store.resolveImage(req.image)
    const mountpoint = await resolveOutsideMounts(req.mountpoint, () => this.own(), 'mountpoint')
    // Layers and uppers are reached by path: under the mountpoint they would lead into the mount.
    const root = await realpath(this.store.layout.root)
    if (isAtOrBelow(mountpoint, root)) throw new StrataError('BAD_REQUEST', `mountpoint ${req.mountpoint} lies inside the store ${root}: the daemon would reach its own mount through it`)
    if (this.reserved.has(mountpoint) || this.active.has(mountpoint)) throw new StrataError('CONFLICT', `${mountpoint} is already a mountpoint`)
    this.reserved.add(mountpoint)
    let created: ContainerRecord | undefined
    try {
      await checkMountpoint(mountpoint)
      let container = req.name !== undefined ? await this.store.resolveContainer(req.name).catch(() => undefined) : undefined
      if (container !== undefined) {
        if (container.imageId !== image.id) throw new StrataError('CONFLICT', `container ${container.name} exists with another image`)
        if (container.readOnly !== (req.readOnly === true)) throw new StrataError('CONFLICT', `container ${container.name} exists as ${container.readOnly ? 'read-only' : 'writable'}`)
        if (this.isMounted(container.id) || this.reserved.has(container.id)) throw new StrataError('CONFLICT', `container ${container.name} is already mounted on ${container.mountpoint ?? 'another mountpoint'}`)
      } else {
        container = created = await this.store.createContainer({ name: req.name, image, readOnly: req.readOnly === true })
      }
      this.reserved.add(container.id)
      try {
        const lower = await this.indexes.get(container.diffIds)
        const log = this.log.child({ container: container.name })
        const overlay = await mountOverlay({
          mountpoint,
          layerDirs: container.diffIds.map((d) => this.store.layerDir(d)),
          lower,
          upper: container.readOnly ? undefined : { upperDir: this.store.layout.upperDir(container.id), workDir: this.store.layout.workDir(container.id) },
          // A chmod of a big lower file costs no data copy; commit reads such files' data below.
          metacopy: true,
          log,
          name: container.name
        })
        container = { ...container, mountpoint }
        const active = { container, overlay }
        this.active.set(mountpoint, active)
        void overlay.ended.then(async () => {
          if (this.active.get(mountpoint) !== active) return
          this.log.warn({ container: active.container.name, mountpoint }, 'unmounted from outside')
          await this.release(active).catch((err: unknown) => this.log.error({ err, mountpoint }, 'cleanup after an outside unmount failed'))
        })
        await this.store.updateContainer(container)
        this.log.info({ container: container.name, mountpoint, image: image.id, readOnly: container.readOnly }, 'mounted')
        return container
      } finally {
        this.reserved.delete(container.id)
      }
    } catch (err) {
      if (created !== undefined) await this.store.removeContainer(created.id).catch(() => {})
      throw err
    } finally {
      this.reserved.delete(mountpoint)
    }
  }

  /** By mountpoint (matched as given: the daemon must not resolve paths in its own mount) or container. */
  async unmount (target: string): Promise<ContainerRecord> {
    let entry = this.active.get(target)
    if (entry === undefined) {
      const container = await this.store.resolveContainer(target).catch(() => undefined)
      if (container === undefined) throw new StrataError('NOT_FOUND', `${target} is neither a stratafs mountpoint nor a container`)
      entry = [...this.active.values()].find((a) => a.container.id === container.id)
      if (entry === undefined) throw new StrataError('CONFLICT', `container ${container.name} is not mounted`)
    }
    return this.release(entry)
  }

  async unmountAll (): Promise<void> {
    for (const entry of [...this.active.values()]) {
      await this.release(entry).catch((err: unknown) => this.log.error({ err, mountpoint: entry.container.mountpoint }, 'unmount failed'))
    }
  }

  private async release ({ container, overlay }: Active): Promise<ContainerRecord> {
    await overlay.unmount()
    this.active.delete(overlay.mountpoint)
    const rest = await this.forget(container)
    this.log.info({ container: container.name, mountpoint: overlay.mountpoint }, 'unmounted')
    return rest
  }

  /**
   * Forgets the mounts a previous daemon recorded. A daemon that was killed leaves its FUSE
   * mounts dead ("Transport endpoint is not connected"): detach them lazily.
   */
  async recover (): Promise<void> {
    const table = await readMountInfo()
    for (const container of await this.store.containers()) {
      if (container.mountpoint === undefined) continue
      const stale = table.find((m) => m.mountpoint === container.mountpoint && m.fstype.startsWith('fuse'))
      if (stale !== undefined) {
        const r = spawnSync('fusermount', ['-u', '-z', container.mountpoint], { encoding: 'utf8' })
        if (r.status !== 0) spawnSync('umount', ['-l', container.mountpoint])
        this.log.warn({ container: container.name, mountpoint: container.mountpoint }, 'detached a stale mount left by a previous daemon')
      }
      await this.forget(container)
    }
  }

  /** Clears a container's mountpoint; a read-only mount has no state of its own, so its record goes. */
  private async forget (container: ContainerRecord): Promise<ContainerRecord> {
    const { mountpoint: _gone, ...rest } = container
    await this.store.updateContainer(rest)
    if (container.readOnly) await this.store.removeContainer(container.id)
    return rest
  }
}

async function checkMountpoint (mountpoint: string): Promise<void> {
  if ((await readMountInfo()).some((m) => m.mountpoint === mountpoint)) throw new StrataError('CONFLICT', `${mountpoint} is already a mountpoint`)
  let st
  try {
    st = await stat(mountpoint)
  } catch (err) {
    if (errorCode(err) === 'ENOENT') throw new StrataError('NOT_FOUND', `mountpoint ${mountpoint} does not exist`)
    if (errorCode(err) === 'ENOTCONN') throw new StrataError('CONFLICT', `${mountpoint} is a dead mount (run 'umount -l ${mountpoint}')`)
    throw err
  }
  if (!st.isDirectory()) throw new StrataError('BAD_REQUEST', `mountpoint ${mountpoint} is not a directory`)
}
