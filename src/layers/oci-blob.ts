import { rm } from 'node:fs/promises'
import { pipeline } from 'node:stream'
import { StrataError } from '../errors.js'
import { HashingStream, isDigest, sha256Hex } from './digest.js'
import { importLayerStream, type ImportedLayer } from './import.js'
import type { ImageSource } from './oci-source.js'

/** One layer as an archive's manifest lists it. */
export interface ArchiveLayer {
  /** Where the layer's bytes are, relative to the archive root. */
  path: string
  /** Digest and length the manifest promises for those bytes, when it states them. */
  digest?: string
  size?: number
}

/** One image found in an archive, its config read and verified, its layers not yet read. */
export interface ArchiveImage {
  format: 'oci' | 'docker-archive'
  /** The config exactly as the archive holds it: its sha256 is the image ID docker gives it. */
  configBytes: Buffer
  configDigest: string
  config: Record<string, unknown>
  diffIds: string[]
  /** Bottom first, one per DiffID. */
  layers: ArchiveLayer[]
  /** References (`name:tag`) the archive gives the image, as written there. */
  tags: string[]
}

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
const BZIP2_MAGIC = Buffer.from('BZh')

/** `blobs/sha256/<hex>` of a descriptor's digest, refusing digests that are not plain sha256. */
export function blobPath (digest: unknown, what: string): string {
  if (typeof digest !== 'string') throw new StrataError('BAD_IMAGE', `${what} has no digest`)
  if (isDigest(digest)) return `blobs/sha256/${digest.slice('sha256:'.length)}`
  if (/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(digest) && !digest.startsWith('sha256:')) {
    throw new StrataError('BAD_IMAGE', `${what} uses the digest algorithm "${digest.split(':')[0]}"; only sha256 is supported`)
  }
  throw new StrataError('UNSAFE_PATH', `${what} has an invalid digest ${JSON.stringify(digest).slice(0, 100)}`)
}

/** The digest a `blobs/sha256/<hex>` path promises, so content found by path is verified too. */
export function digestOfPath (path: string): string | undefined {
  const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(path)
  return m === null ? undefined : `sha256:${m[1]}`
}

export function parseJson (bytes: Buffer, what: string): unknown {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    throw new StrataError('BAD_IMAGE', `${what} is not UTF-8 text`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new StrataError('BAD_IMAGE', `${what} is not valid JSON (${(err as Error).message})`)
  }
}

export function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** A JSON document of the archive, checked against the length and digest that name it. */
export async function readVerified (source: ImageSource, path: string, what: string, digest?: string, size?: number): Promise<Buffer> {
  const bytes = await source.read(path, what)
  if (size !== undefined && bytes.length !== size) {
    throw new StrataError('BAD_IMAGE', `${what} "${path}" is ${bytes.length} bytes, its descriptor says ${size}`)
  }
  const actual = `sha256:${sha256Hex(bytes)}`
  if (digest !== undefined && actual !== digest) {
    throw new StrataError('BAD_IMAGE', `${what} "${path}" does not match its digest: it is ${actual}, expected ${digest}`)
  }
  return bytes
}

/** Reads and checks an image config; `layers` must pair with its `rootfs.diff_ids`. */
export async function loadImage (
  source: ImageSource, configPath: string, configDigest: string | undefined, configSize: number | undefined,
  partial: Pick<ArchiveImage, 'format' | 'layers' | 'tags'>
): Promise<ArchiveImage> {
  const what = 'image config'
  const configBytes = await readVerified(source, configPath, what, configDigest, configSize)
  const config = parseJson(configBytes, `${what} "${configPath}"`)
  if (!isObject(config)) throw new StrataError('BAD_IMAGE', `${what} "${configPath}" is not a JSON object`)
  const rootfs = config.rootfs
  if (!isObject(rootfs) || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw new StrataError('BAD_IMAGE', `${what} "${configPath}" has no rootfs {type: "layers", diff_ids: [...]}`)
  }
  const diffIds = rootfs.diff_ids as unknown[]
  for (const d of diffIds) {
    if (typeof d !== 'string' || !isDigest(d)) throw new StrataError('BAD_IMAGE', `${what} "${configPath}" lists an invalid DiffID ${JSON.stringify(d)}`)
  }
  if (diffIds.length !== partial.layers.length) {
    throw new StrataError('BAD_IMAGE', `the manifest lists ${partial.layers.length} layers but the image config has ${diffIds.length} DiffIDs`)
  }
  return { ...partial, configBytes, configDigest: `sha256:${sha256Hex(configBytes)}`, config, diffIds: diffIds as string[] }
}

function compressionRefused (head: Buffer): string | undefined {
  if (head.subarray(0, ZSTD_MAGIC.length).equals(ZSTD_MAGIC)) return 'zstd'
  if (head.subarray(0, XZ_MAGIC.length).equals(XZ_MAGIC)) return 'xz'
  if (head.subarray(0, BZIP2_MAGIC.length).equals(BZIP2_MAGIC)) return 'bzip2'
  return undefined
}

/**
 * Stages one layer of an archive with the ordinary layer import, checking on the way the blob's
 * length and digest (when the manifest states them) and, at the end, the DiffID the config
 * promises. `label` names the layer in every error. A layer that fails any check is removed.
 */
export async function stageArchiveLayer (
  source: ImageSource, layer: ArchiveLayer, diffId: string, label: string, tmpDir: string,
  onProgress?: (done: number, total?: number) => void
): Promise<ImportedLayer> {
  const size = await source.size(layer.path)
  if (size === undefined) throw new StrataError('BAD_IMAGE', `${label}: blob "${layer.path}" is missing from the archive`)
  if (layer.size !== undefined && size !== layer.size) {
    throw new StrataError('BAD_IMAGE', `${label}: blob "${layer.path}" is ${size} bytes, the manifest says ${layer.size}`)
  }
  const refused = compressionRefused(await source.head(layer.path, XZ_MAGIC.length))
  if (refused !== undefined) {
    throw new StrataError('BAD_IMAGE', `${label} is ${refused}-compressed; only gzip and uncompressed layers can be imported (recompress it with gzip)`)
  }
  const hasher = new HashingStream()
  let staged: ImportedLayer
  try {
    // pipeline, not pipe: a read error must reach the extraction instead of stalling it.
    const input = pipeline(source.stream(layer.path), hasher, () => {})
    staged = await importLayerStream(input, tmpDir, size, { onProgress })
  } catch (err) {
    if (err instanceof StrataError) throw new StrataError(err.code, `${label}: ${err.message}`, { cause: err })
    throw err
  }
  const expectedBlob = layer.digest ?? digestOfPath(layer.path)
  let problem: string | undefined
  if (expectedBlob !== undefined && hasher.digest() !== expectedBlob) {
    problem = `${label}: blob "${layer.path}" does not match its digest: it is ${hasher.digest()}, expected ${expectedBlob}`
  } else if (staged.diffId !== diffId) {
    problem = `${label} has DiffID ${staged.diffId} but the image config says ${diffId}`
  }
  if (problem !== undefined) {
    await rm(staged.dir, { recursive: true, force: true })
    throw new StrataError('BAD_IMAGE', problem)
  }
  return staged
}
