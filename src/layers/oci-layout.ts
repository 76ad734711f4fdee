import { StrataError } from '../errors.js'
import { blobPath, isObject, loadImage, parseJson, readVerified, type ArchiveImage, type ArchiveLayer } from './oci-blob.js'
import type { ImageSource } from './oci-source.js'

export const OCI_INDEX = 'index.json'
export const OCI_LAYOUT = 'oci-layout'

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'])
const MANIFEST_TYPES = new Set(['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'])
const CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json'])
/** Plain and gzipped tars, OCI's and docker's names for them; the content is sniffed anyway. */
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'
])
const NAME_ANNOTATION = 'io.containerd.image.name'
const REF_ANNOTATION = 'org.opencontainers.image.ref.name'

export interface Platform { os: string; architecture: string }

interface Descriptor { mediaType?: unknown; digest?: unknown; size?: unknown; annotations?: unknown; platform?: unknown }

function descriptorSize (d: Descriptor, what: string): number | undefined {
  if (d.size === undefined) return undefined
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw new StrataError('BAD_IMAGE', `${what} has an invalid size`)
  return d.size
}

async function readDocument (source: ImageSource, d: Descriptor, what: string): Promise<Record<string, unknown>> {
  const path = blobPath(d.digest, what)
  const doc = parseJson(await readVerified(source, path, what, d.digest as string, descriptorSize(d, what)), `${what} "${path}"`)
  if (!isObject(doc)) throw new StrataError('BAD_IMAGE', `${what} "${path}" is not a JSON object`)
  return doc
}

/**
 * The names an index entry gives its image. containerd (and docker 25+) put the full name in
 * their own annotation and only the tag in the OCI one; skopeo's `oci:DIR:NAME` writes whatever
 * followed the colon. A bare tag names no repository, so it is no name on its own.
 */
function namesOf (d: Descriptor): string[] {
  const a = isObject(d.annotations) ? d.annotations : {}
  const full = a[NAME_ANNOTATION]
  if (typeof full === 'string' && full !== '') return [full]
  const ref = a[REF_ANNOTATION]
  if (typeof ref === 'string' && /[:/]/.test(ref)) return [ref]
  return []
}

function platformOf (d: Descriptor): string {
  const p = isObject(d.platform) ? d.platform : {}
  return `${String(p.os ?? '?')}/${String(p.architecture ?? '?')}`
}

async function readManifest (source: ImageSource, d: Descriptor, what: string, tags: string[]): Promise<ArchiveImage> {
  const manifest = await readDocument(source, d, what)
  const config = manifest.config
  if (!isObject(config)) throw new StrataError('BAD_IMAGE', `${what} has no config descriptor`)
  if (typeof config.mediaType === 'string' && !CONFIG_TYPES.has(config.mediaType)) {
    throw new StrataError('BAD_IMAGE', `${what} is not a container image (its config is ${config.mediaType})`)
  }
  if (!Array.isArray(manifest.layers)) throw new StrataError('BAD_IMAGE', `${what} has no layers list`)
  const layers: ArchiveLayer[] = manifest.layers.map((l: unknown, i: number) => {
    const lw = `layer ${i + 1} of ${what}`
    if (!isObject(l)) throw new StrataError('BAD_IMAGE', `${lw} is not a descriptor`)
    const type = typeof l.mediaType === 'string' ? l.mediaType : ''
    if (type.endsWith('+zstd')) throw new StrataError('BAD_IMAGE', `${lw} is zstd-compressed (${type}); only gzip and uncompressed layers can be imported (recompress it with gzip)`)
    if (!LAYER_TYPES.has(type)) throw new StrataError('BAD_IMAGE', `${lw} has the unsupported media type ${JSON.stringify(type)}`)
    return { path: blobPath(l.digest, lw), digest: l.digest as string, size: descriptorSize(l, lw) }
  })
  return loadImage(source, blobPath(config.digest, `config of ${what}`), config.digest as string, descriptorSize(config, `config of ${what}`), { format: 'oci', layers, tags })
}

/**
 * The images an OCI image layout lists in its `index.json`. An entry that is itself an index
 * (a multi-platform image) contributes the manifest for `platform`, the one this machine runs.
 */
export async function readOciLayout (source: ImageSource, platform: Platform): Promise<ArchiveImage[]> {
  if (await source.size(OCI_LAYOUT) !== undefined) {
    const layout = parseJson(await source.read(OCI_LAYOUT, OCI_LAYOUT), OCI_LAYOUT)
    if (!isObject(layout) || layout.imageLayoutVersion !== '1.0.0') {
      throw new StrataError('BAD_IMAGE', `unsupported OCI layout version ${JSON.stringify(isObject(layout) ? layout.imageLayoutVersion : layout)}`)
    }
  }
  const index = parseJson(await source.read(OCI_INDEX, OCI_INDEX), OCI_INDEX)
  if (!isObject(index) || !Array.isArray(index.manifests)) throw new StrataError('BAD_IMAGE', `${OCI_INDEX} has no manifests list`)
  const byManifest = new Map<string, ArchiveImage>()
  const visit = async (d: Descriptor, what: string, tags: string[], depth: number): Promise<void> => {
    if (!isObject(d)) throw new StrataError('BAD_IMAGE', `${what} is not a descriptor`)
    const type = d.mediaType
    if (typeof type === 'string' && INDEX_TYPES.has(type)) {
      if (depth > 4) throw new StrataError('BAD_IMAGE', `${what}: image indexes nested too deep`)
      const nested = await readDocument(source, d, what)
      const entries = (Array.isArray(nested.manifests) ? nested.manifests : []) as Descriptor[]
      const wanted = `${platform.os}/${platform.architecture}`
      const matching = entries.filter((e) => isObject(e) && platformOf(e) === wanted)
      if (matching.length === 0) {
        throw new StrataError('BAD_IMAGE', `${what} has no ${wanted} image (it has ${entries.map(platformOf).join(', ') || 'none'})`)
      }
      // A saved multi-platform image often holds the blobs of this platform only.
      const present: Descriptor[] = []
      for (const e of matching) if (await source.size(blobPath(e.digest, what)) !== undefined) present.push(e)
      await visit(present[0] ?? matching[0]!, `${wanted} manifest of ${what}`, tags, depth + 1)
      return
    }
    if (typeof type === 'string' && !MANIFEST_TYPES.has(type)) throw new StrataError('BAD_IMAGE', `${what} has the unsupported media type ${type}`)
    const key = String(d.digest)
    const known = byManifest.get(key)
    if (known !== undefined) {
      known.tags.push(...tags)
      return
    }
    byManifest.set(key, await readManifest(source, d, what, [...tags]))
  }
  for (const [i, d] of (index.manifests as Descriptor[]).entries()) {
    await visit(d, `${OCI_INDEX} entry ${i + 1}`, namesOf(d), 0)
  }
  return [...byManifest.values()]
}
