import { chainIds } from '../layers/digest.js'
import type { ImageRecord } from '../store/records.js'
import type { Store } from '../store/store.js'
import type { HistoryItem, ImageSummary } from './api-types.js'

/** `image inspect` in docker's field names, so scripts written for docker read it unchanged. */
export interface InspectedImage {
  Id: string
  RepoTags: string[]
  RepoDigests: string[]
  Parent: string
  Comment: string
  Created: string
  Author: string
  Config: ImageRecord['config']['config']
  Architecture: string
  Os: string
  Size: number
  GraphDriver: { Name: 'stratafs'; Data: { LowerDir: string; ChainID: string } }
  RootFS: { Type: 'layers'; Layers: string[] }
}

export async function inspectImage (store: Store, image: ImageRecord): Promise<InspectedImage> {
  const { config } = image
  const diffIds = config.rootfs.diff_ids
  const history = config.history ?? []
  return {
    Id: image.id,
    RepoTags: (await store.tagsOf(image.id)).sort(),
    RepoDigests: [],
    Parent: '',
    Comment: config.comment ?? history[history.length - 1]?.comment ?? '',
    Created: config.created,
    Author: config.author ?? '',
    Config: config.config,
    Architecture: config.architecture,
    Os: config.os,
    Size: await store.imageSize(image),
    GraphDriver: {
      Name: 'stratafs',
      Data: {
        // overlay2 lists lower dirs topmost first, as the kernel's lowerdir= option wants them.
        LowerDir: diffIds.map((d) => store.layerDir(d)).reverse().join(':'),
        ChainID: chainIds(diffIds).at(-1) ?? ''
      }
    },
    RootFS: { Type: 'layers', Layers: [...diffIds] }
  }
}

/**
 * Newest first, as `docker history`. Entries without `empty_layer` consume the layers bottom-up,
 * which is how OCI ties history to diff_ids.
 */
export async function imageHistory (store: Store, image: ImageRecord): Promise<HistoryItem[]> {
  const diffIds = image.config.rootfs.diff_ids
  const items: HistoryItem[] = []
  let next = 0
  for (const entry of image.config.history ?? []) {
    let size = 0
    if (entry.empty_layer !== true) {
      const diffId = diffIds[next++]
      if (diffId !== undefined) size = (await store.layer(diffId).catch(() => undefined))?.size ?? 0
    }
    items.push({ ...entry, image: '<missing>', size })
  }
  items.reverse()
  if (items[0] !== undefined) items[0].image = image.id
  return items
}

export async function imageSummaries (store: Store): Promise<ImageSummary[]> {
  const out: ImageSummary[] = []
  for (const image of await store.images()) {
    out.push({ id: image.id, repoTags: image.tags.sort(), created: image.config.created, size: await store.imageSize(image) })
  }
  return out.sort((a, b) => b.created.localeCompare(a.created))
}
