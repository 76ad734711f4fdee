import type { HistoryEntry, ImageConfig } from '../store/image-config.js'
import type { LayerRecord } from '../store/records.js'

/**
 * The daemon's API as the client sees it: request bodies and results. Paths are absolute by the
 * time they reach the daemon (the client resolves them against its own cwd).
 */

export interface ImportLayerRequest { path: string }
export interface ImportLayerResult { diffId: string; size: number; existed: boolean }

/** Progress of a streamed operation, one NDJSON line each. */
export interface ProgressEvent { source: string; done: number; total?: number }

export interface CreateImageRequest {
  tag: string
  /** Bottom first: a DiffID of a stored layer, or an absolute path to import. */
  layers: string[]
  env?: string[]
  cmd?: string
  workdir?: string
  labels?: string[]
  createdBy?: string
}
export interface CreateImageResult { id: string; tag: string; diffIds: string[] }

export interface ImageSummary {
  id: string
  repoTags: string[]
  created: string
  size: number
}

export interface HistoryItem extends HistoryEntry {
  /** The image id for the top row, '<missing>' below it, as docker shows pulled images. */
  image: string
  size: number
}

export interface RemoveImageResult { untagged: string[]; deleted: string[]; layersDeleted: string[] }

export interface MountRequest { image: string; mountpoint: string; name?: string; readOnly?: boolean }

export interface ContainerSummary {
  id: string
  name: string
  imageId: string
  image: string
  created: string
  readOnly: boolean
  mountpoint?: string
  status: 'mounted' | 'unmounted'
}

export interface DiffChange { kind: 'A' | 'C' | 'D'; path: string }

export interface CommitRequest { container: string; tag: string; message?: string }
export interface CommitResult { id: string; tag: string; diffId: string }

export type { ImageConfig, LayerRecord }

/** The stream framing: progress lines, then exactly one result or error line. */
export type StreamLine<T> =
  | { progress: ProgressEvent }
  | { result: T }
  | { error: { code: string; message: string } }
