import { rm } from 'node:fs/promises'
import { StrataError } from '../errors.js'
import type { ImportedLayer } from '../layers/import.js'
import { readImageArchive } from '../layers/oci-archive.js'
import { isObject, stageArchiveLayer, type ArchiveImage } from '../layers/oci-blob.js'
import { openImageSource, type ImageSource } from '../layers/oci-source.js'
import type { Logger } from '../log.js'
import { ociArchitecture, type HistoryEntry, type ImageConfig } from '../store/image-config.js'
import { normalizeTag } from '../store/refs.js'
import type { Store } from '../store/store.js'
import type { ProgressEvent } from './api-types.js'
import { isAtOrBelow } from '../sys/mountinfo.js'

export interface ImportImageRequest {
  /** An OCI image layout or a `docker save` archive: a directory, a tar or a tar.gz. */
  path: string
  /** Replaces the archive's own names; the archive must then hold exactly one image. */
  tag?: string
}

export interface ImportedImage {
  id: string
  tags: string[]
  format: ArchiveImage['format']
  layers: number
  /** Layers that were not in the store before. */
  newLayers: number
}

export interface ImportImageResult { images: ImportedImage[] }

/** Configs without a creation time (OCI allows it) show the epoch, as reproducible builds do. */
const NO_DATE = '1970-01-01T00:00:00Z'

/** Docker shows `docker.io/library/alpine` as `alpine`; containerd's annotations use the long form. */
function familiar (ref: string): string {
  return ref.replace(/^docker\.io\/library\/(?=[^/]+$)/, '').replace(/^docker\.io\//, '')
}

function stringList (v: unknown): boolean {
  return v === null || v === undefined || (Array.isArray(v) && v.every((s) => typeof s === 'string'))
}

/**
 * The archive's config as the store keeps it: every field it has (Entrypoint, User, Volumes…
 * show in `image inspect` as docker shows them), checked where this program reads them.
 */
function importedConfig (image: ArchiveImage): ImageConfig {
  const c = image.config
  const bad = (what: string): StrataError => new StrataError('BAD_IMAGE', `image config ${image.configDigest}: ${what}`)
  if (typeof c.architecture !== 'string' || typeof c.os !== 'string') throw bad('architecture and os must be strings')
  if (c.os !== 'linux') throw bad(`it is a ${c.os} image; only linux images can be mounted`)
  for (const key of ['created', 'author', 'comment']) if (c[key] !== undefined && typeof c[key] !== 'string') throw bad(`${key} must be a string`)
  const run = c.config ?? {}
  if (!isObject(run)) throw bad('config must be an object')
  for (const key of ['Env', 'Cmd', 'Entrypoint']) if (!stringList(run[key])) throw bad(`config.${key} must be a list of strings`)
  if (run.WorkingDir !== undefined && typeof run.WorkingDir !== 'string') throw bad('config.WorkingDir must be a string')
  for (const key of ['Labels', 'ExposedPorts']) if (run[key] !== undefined && run[key] !== null && !isObject(run[key])) throw bad(`config.${key} must be an object`)
  const history = c.history ?? []
  if (!Array.isArray(history) || !history.every((h) => isObject(h) && (h.created === undefined || typeof h.created === 'string'))) {
    throw bad('history must be a list of entries')
  }
  return {
    ...c,
    created: typeof c.created === 'string' ? c.created : NO_DATE,
    config: run as ImageConfig['config'],
    history: history as HistoryEntry[]
  } as ImageConfig
}

function tagsFor (image: ArchiveImage, req: ImportImageRequest): string[] {
  if (req.tag !== undefined) return [normalizeTag(req.tag)]
  return [...new Set(image.tags.map((t) => {
    try {
      return normalizeTag(familiar(t))
    } catch (err) {
      throw new StrataError('BAD_IMAGE', `the archive names an image ${JSON.stringify(t)}: ${(err as Error).message}`)
    }
  }))]
}

/**
 * `image import`: every image of an OCI layout or `docker save` archive into the store. All of
 * an archive's manifests and configs are read and checked before anything is written; then each
 * image's missing layers are staged and verified (blob digest, DiffID) and only when all of them
 * pass are they stored and the image created, so a bad archive leaves no half an image behind.
 * The image keeps the archive's config bytes, so its ID is the one docker gives it.
 */
export async function importImageArchive (
  store: Store, req: ImportImageRequest, progress: (event: ProgressEvent) => void, log: Logger, ownMounts: () => Iterable<string>
): Promise<ImportImageResult> {
  if (req.tag !== undefined) normalizeTag(req.tag)
  // A symlink in an unpacked archive could lead into one of our mounts: touching it would hang the daemon.
  const source = await openImageSource(req.path, store.layout.tmpDir, (abs) => {
    for (const mp of ownMounts()) {
      if (isAtOrBelow(abs, mp)) throw new StrataError('BAD_REQUEST', `${abs} is inside the stratafs mount ${mp}; the daemon cannot read its own mounts`)
    }
  })
  try {
    const images = await readImageArchive(source, { os: 'linux', architecture: ociArchitecture() })
    if (req.tag !== undefined && images.length !== 1) {
      throw new StrataError('BAD_REQUEST', `${req.path} holds ${images.length} images; --tag names exactly one`)
    }
    const plans = images.map((image) => ({ image, config: importedConfig(image), tags: tagsFor(image, req) }))
    const out: ImportedImage[] = []
    for (const plan of plans) out.push(await importOne(store, source, plan, progress, log))
    return { images: out }
  } finally {
    await source.close()
  }
}

async function importOne (
  store: Store, source: ImageSource, plan: { image: ArchiveImage; config: ImageConfig; tags: string[] },
  progress: (event: ProgressEvent) => void, log: Logger
): Promise<ImportedImage> {
  const { image } = plan
  const staged = new Map<string, ImportedLayer>()
  let newLayers = 0
  try {
    for (const [i, layer] of image.layers.entries()) {
      const diffId = image.diffIds[i]!
      if (staged.has(diffId) || await store.hasLayer(diffId)) continue
      const label = `layer ${i + 1}/${image.layers.length} (${layer.path})`
      staged.set(diffId, await stageArchiveLayer(source, layer, diffId, label, store.layout.tmpDir,
        (done, total) => progress({ source: `${source.path}: ${label}`, done, total })))
    }
    for (const [i, layer] of image.layers.entries()) {
      const s = staged.get(image.diffIds[i]!)
      if (s === undefined) continue
      const { existed } = await store.addLayer(s, `${source.path} ${layer.path}`)
      staged.delete(s.diffId)
      if (!existed) newLayers++
    }
  } finally {
    await Promise.all([...staged.values()].map((s) => rm(s.dir, { recursive: true, force: true })))
  }
  const record = await store.createImage(plan.config, plan.tags, image.configBytes)
  log.info({ id: record.id, tags: plan.tags, format: image.format, source: source.path }, 'image imported')
  return { id: record.id, tags: plan.tags, format: image.format, layers: image.layers.length, newLayers }
}
