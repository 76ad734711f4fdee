import { StrataError } from '../errors.js'
import { digestOfPath, isObject, loadImage, parseJson, type ArchiveImage } from './oci-blob.js'
import { archivePath, type ImageSource } from './oci-source.js'

export const DOCKER_MANIFEST = 'manifest.json'

/** The old `docker save` config name, `<sha256 hex>.json`, is its digest. */
function digestOfConfigPath (path: string): string | undefined {
  const m = /^([0-9a-f]{64})\.json$/.exec(path)
  return m === null ? digestOfPath(path) : `sha256:${m[1]}`
}

/**
 * The images of a `docker save` archive, from its `manifest.json`: one entry per image, with
 * `Config`, `RepoTags` and `Layers` as paths inside the archive, either the classic
 * `<id>/layer.tar` form or, since docker 25, `blobs/sha256/<hex>` (the archive being an OCI
 * layout too). Paths in the blobs form and classic config names carry their digest, which is
 * checked.
 */
export async function readDockerArchive (source: ImageSource): Promise<ArchiveImage[]> {
  const manifest = parseJson(await source.read(DOCKER_MANIFEST, DOCKER_MANIFEST), DOCKER_MANIFEST)
  if (!Array.isArray(manifest)) throw new StrataError('BAD_IMAGE', `${DOCKER_MANIFEST} is not a list of images`)
  const images: ArchiveImage[] = []
  for (const [i, entry] of manifest.entries()) {
    const where = `${DOCKER_MANIFEST} entry ${i + 1}`
    if (!isObject(entry) || !Array.isArray(entry.Layers)) throw new StrataError('BAD_IMAGE', `${where} has no Layers list`)
    const configPath = archivePath(entry.Config, `${where} Config`)
    const layers = entry.Layers.map((l: unknown, n: number) => {
      const path = archivePath(l, `${where} layer ${n + 1}`)
      return { path, digest: digestOfPath(path) }
    })
    const repoTags = entry.RepoTags ?? []
    if (!Array.isArray(repoTags) || !repoTags.every((t) => typeof t === 'string')) {
      throw new StrataError('BAD_IMAGE', `${where} RepoTags is not a list of names`)
    }
    images.push(await loadImage(source, configPath, digestOfConfigPath(configPath), undefined, { format: 'docker-archive', layers, tags: repoTags as string[] }))
  }
  return images
}
