import { StrataError } from '../errors.js'
import { DOCKER_MANIFEST, readDockerArchive } from './docker-archive.js'
import type { ArchiveImage } from './oci-blob.js'
import { OCI_INDEX, readOciLayout, type Platform } from './oci-layout.js'
import type { ImageSource } from './oci-source.js'

/**
 * The images of an archive, whichever form it has. A docker 25+ archive is both forms at once;
 * its `manifest.json` is read, as `docker load` does, for it carries the RepoTags.
 */
export async function readImageArchive (source: ImageSource, platform: Platform): Promise<ArchiveImage[]> {
  let images: ArchiveImage[]
  if (await source.size(DOCKER_MANIFEST) !== undefined) images = await readDockerArchive(source)
  else if (await source.size(OCI_INDEX) !== undefined) images = await readOciLayout(source, platform)
  else throw new StrataError('BAD_IMAGE', `${source.path} is neither an OCI image layout (no ${OCI_INDEX}) nor a docker save archive (no ${DOCKER_MANIFEST})`)
  if (images.length === 0) throw new StrataError('BAD_IMAGE', `${source.path} holds no image`)
  return images
}
