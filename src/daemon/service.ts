import { createWriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { StrataError } from '../errors.js'
import { isDigest } from '../layers/digest.js'
import { importLayer } from '../layers/import.js'
import { layerTar } from '../layers/tar-writer.js'
import type { Logger } from '../log.js'
import { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { lowerDataPath } from '../overlay/materialize.js'
import type { ContainerRecord } from '../store/records.js'
import { normalizeTag } from '../store/refs.js'
import type { Store } from '../store/store.js'
import type {
  CommitRequest, CommitResult, ContainerSummary, CreateImageRequest, CreateImageResult, DiffChange, HistoryItem,
  ImageSummary, ImportLayerResult, LayerRecord, MountRequest, ProgressEvent, RemoveImageResult
} from './api-types.js'
import { diffUpper } from './diff.js'
import { buildImageConfig, commitConfig } from './image-builder.js'
import { importImageArchive, type ImportImageRequest, type ImportImageResult } from './image-import.js'
import { imageHistory, imageSummaries, inspectImage, type InspectedImage } from './image-views.js'
import { LowerIndexes } from './lower-indexes.js'
import { Mounts } from './mounts.js'
import { resolveOutsideMounts } from './safe-path.js'

export type Progress = (event: ProgressEvent) => void

/** What the API does, transport aside. Every method validates its input: requests come from anyone with the socket. */
export class Service {
  readonly mounts: Mounts
  private readonly indexes: LowerIndexes

  constructor (readonly store: Store, private readonly log: Logger) {
    this.indexes = new LowerIndexes(store, log.child({ sub: 'index' }))
    this.mounts = new Mounts(store, this.indexes, log.child({ sub: 'mounts' }))
  }

  async importLayer (path: string, progress: Progress = () => {}): Promise<ImportLayerResult> {
    const source = await resolveOutsideMounts(path, () => this.mounts.own(), 'import path')
    const staged = await importLayer(source, this.store.layout.tmpDir, {
      onProgress: (done: number, total?: number) => progress({ source, done, total })
    })
    const { layer, existed } = await this.store.addLayer(staged, source)
    return { diffId: layer.diffId, size: layer.size, existed }
  }

  layers (): Promise<LayerRecord[]> {
    return this.store.layers()
  }

  async createImage (req: CreateImageRequest, progress: Progress = () => {}): Promise<CreateImageResult> {
    if (!Array.isArray(req.layers) || req.layers.length === 0) throw new StrataError('BAD_REQUEST', 'an image needs at least one layer')
    if (typeof req.tag !== 'string') throw new StrataError('BAD_REQUEST', 'an image needs a NAME:TAG')
    const diffIds: string[] = []
    const sources: string[] = []
    for (const layer of req.layers) {
      if (isDigest(layer)) {
        sources.push((await this.store.layer(layer)).source)
        diffIds.push(layer)
      } else {
        const imported = await this.importLayer(layer, progress)
        sources.push(layer)
        diffIds.push(imported.diffId)
      }
    }
    const image = await this.store.createImage(buildImageConfig(req, diffIds, sources), [req.tag])
    return { id: image.id, tag: normalizeTag(req.tag), diffIds }
  }

  async importImage (req: ImportImageRequest, progress: Progress = () => {}): Promise<ImportImageResult> {
    const path = await resolveOutsideMounts(req.path, () => this.mounts.own(), 'image archive')
    return importImageArchive(this.store, { ...req, path }, progress, this.log.child({ sub: 'image-import' }), () => this.mounts.own())
  }

  images (): Promise<ImageSummary[]> {
    return imageSummaries(this.store)
  }

  async inspectImage (ref: string): Promise<InspectedImage[]> {
    return [await inspectImage(this.store, await this.store.resolveImage(ref))]
  }

  async imageHistory (ref: string): Promise<HistoryItem[]> {
    return imageHistory(this.store, await this.store.resolveImage(ref))
  }

  async removeImage (ref: string, force: boolean): Promise<RemoveImageResult> {
    const image = await this.store.resolveImage(ref)
    const mounted = (await this.store.containers()).filter((c) => c.imageId === image.id && this.mounts.isMounted(c.id))
    if (mounted.length > 0 && force) {
      // Deleting layer directories under a live mount would pull the floor from under it.
      throw new StrataError('CONFLICT', `image ${ref} is mounted by container ${mounted.map((c) => c.name).join(', ')}; unmount it first`)
    }
    const removed = await this.store.removeImage(ref, force)
    await this.indexes.prune()
    return removed
  }

  async tagImage (ref: string, tag: string): Promise<{ tag: string }> {
    return { tag: await this.store.tag(ref, tag) }
  }

  async mount (req: MountRequest): Promise<ContainerSummary> {
    return this.summary(await this.mounts.mount(req))
  }

  async unmount (target: string): Promise<ContainerSummary> {
    if (typeof target !== 'string' || target === '') throw new StrataError('BAD_REQUEST', 'umount needs a mountpoint or a container')
    return this.summary(await this.mounts.unmount(target))
  }

  async containers (): Promise<ContainerSummary[]> {
    const all = await this.store.containers()
    const out = await Promise.all(all.map((c) => this.summary(c)))
    return out.sort((a, b) => b.created.localeCompare(a.created))
  }

  async removeContainer (ref: string, force: boolean): Promise<{ id: string; name: string }> {
    const container = await this.store.resolveContainer(ref)
    if (this.mounts.isMounted(container.id)) {
      if (!force) throw new StrataError('CONFLICT', `container ${container.name} is mounted on ${container.mountpoint ?? '?'} (umount it first, or use --force)`)
      await this.mounts.unmount(container.id)
    }
    // A read-only container's record goes with its mount.
    if (!(container.readOnly && force)) await this.store.removeContainer(container.id)
    await this.indexes.prune()
    return { id: container.id, name: container.name }
  }

  async diff (ref: string): Promise<DiffChange[]> {
    const container = await this.store.resolveContainer(ref)
    if (container.readOnly) return []
    const lower = await this.indexes.get(container.diffIds)
    return diffUpper(this.store.layout.upperDir(container.id), (path) => Promise.resolve(lower.lookup(path) !== undefined))
  }

  /**
   * The upper as a tar (the same bytes any OCI tool would make of it), imported as a layer on top
   * of the image. Metacopy files carry their lower data, and the root entry the upper root's
   * attributes, so the committed image shows what the container showed.
   */
  async commit (req: CommitRequest, progress: Progress = () => {}): Promise<CommitResult> {
    const container = await this.store.resolveContainer(req.container)
    if (container.readOnly) throw new StrataError('BAD_REQUEST', `container ${container.name} is a read-only mount: it has no changes to commit`)
    if (typeof req.tag !== 'string') throw new StrataError('BAD_REQUEST', 'commit needs a NAME:TAG')
    const parent = await this.store.image(container.imageId)
    const staging = await mkdtemp(join(this.store.layout.tmpDir, 'commit-'))
    try {
      const tarPath = join(staging, 'layer.tar')
      const lower = await this.indexes.get(container.diffIds)
      const upperDir = this.store.layout.upperDir(container.id)
      const tar = layerTar(upperDir, {
        log: this.log.child({ sub: 'commit' }),
        rootEntry: true,
        metacopyData: (path) => lowerDataPath(lower, path, join(upperDir, path), OverlayXattrs.trusted)
      })
      await pipeline(tar, createWriteStream(tarPath))
      const staged = await importLayer(tarPath, this.store.layout.tmpDir, {
        onProgress: (done: number, total?: number) => progress({ source: `commit ${container.name}`, done, total })
      })
      const { layer } = await this.store.addLayer(staged, `commit ${container.name}`)
      const image = await this.store.createImage(commitConfig(parent.config, layer.diffId, req.message), [req.tag])
      return { id: image.id, tag: normalizeTag(req.tag), diffId: layer.diffId }
    } finally {
      await rm(staging, { recursive: true, force: true })
    }
  }

  private async summary (c: ContainerRecord): Promise<ContainerSummary> {
    const tags = await this.store.tagsOf(c.imageId)
    const mounted = this.mounts.isMounted(c.id)
    return {
      id: c.id,
      name: c.name,
      imageId: c.imageId,
      image: tags.sort()[0] ?? c.imageId.slice('sha256:'.length, 'sha256:'.length + 12),
      created: c.created,
      readOnly: c.readOnly,
      ...(c.mountpoint !== undefined && mounted ? { mountpoint: c.mountpoint } : {}),
      status: mounted ? 'mounted' : 'unmounted'
    }
  }
}
