import type { ImageConfig } from './image-config.js'

export interface LayerRecord {
  diffId: string
  /** Bytes of the layer's uncompressed tar stream. */
  size: number
  created: string
  /** What it was imported from (a path, or `commit <container>`), for people reading `layer ls`. */
  source: string
}

export interface ImageRecord {
  id: string
  config: ImageConfig
}

export interface ContainerRecord {
  id: string
  name: string
  imageId: string
  /**
   * The image's layers, kept on the container so a forced `image rm` cannot delete layer
   * directories a container still stacks on.
   */
  diffIds: string[]
  created: string
  readOnly: boolean
  mountpoint?: string
}

/**
 * One entry of a chain index. The store keeps `entry` opaque: what an entry means belongs to the
 * overlay, which sits above the store.
 */
export interface ChainRecord<E = unknown> { dir: string; name: string; entry: E }

export interface RemovedImage {
  untagged: string[]
  deleted: string[]
  layersDeleted: string[]
}
