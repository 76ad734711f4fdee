import type { LayerEntry } from '../layers/entry.js'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { scanLayer } from '../layers/scan.js'
import type { Stat } from '../sys/index.js'
import { S_IFDIR, S_IFMT } from './mode.js'
import { PackedEntries, type IndexEntry, type StoredEntry } from './packed-entries.js'

export type { IndexEntry, StoredEntry }

/** A persisted form of the index: one record per name. */
export interface IndexRecord {
  dir: string
  name: string
  entry: StoredEntry
}

export const ROOT_RECORD_NAME = ''

export interface BuildOptions {
  seen?: (layer: number, path: string, st: Stat) => void
  xattrs?: OverlayXattrs
}

/**
 * The merged view of the read-only layers of a stack, held in memory: lower layers never change,
 * so every lookup, getattr and readdir of a lower name is answered without a syscall, whatever
 * the depth of the stack. Names map to entries of a PackedEntries.
 */
export class LowerIndex {
  readonly layerDirs: readonly string[]
  private readonly dirs = new Map<string, Map<string, number>>()
  private readonly entries = new PackedEntries()
  private rootId: number | undefined

  private constructor (layerDirs: readonly string[]) {
    this.layerDirs = layerDirs
    this.dirs.set('/', new Map())
  }

  /**
   * Folds the layers bottom first, applying whiteouts and opaque directories of both forms.
   * `seen`: handed every node's lstat as it is read (see `ScanOptions.seen`); `xattrs`: whose
   * opaque xattr counts (see `ScanOptions.xattrs`).
   */
  static async build (layerDirs: readonly string[], opts: BuildOptions = {}): Promise<LowerIndex> {
    const { seen, xattrs } = opts
    const index = new LowerIndex(layerDirs)
    for (let layer = 0; layer < layerDirs.length; layer++) {
      const walk = scanLayer(layerDirs[layer], { xattrs, seen: seen === undefined ? undefined : (path, st) => seen(layer, path, st) })
      for await (const entry of walk) index.apply(layer, entry)
    }
    index.entries.trim()
    return index
  }

  static async fromRecords (layerDirs: readonly string[], batches: AsyncIterable<IndexRecord[]> | Iterable<IndexRecord[]>): Promise<LowerIndex> {
    const index = new LowerIndex(layerDirs)
    const { dirs, entries } = index
    for await (const batch of batches) {
      for (const record of batch) {
        const { dir, name } = record
        const id = entries.addStored(record.entry)
        if (name === ROOT_RECORD_NAME) {
          index.rootId = id
          continue
        }
        let children = dirs.get(dir)
        if (children === undefined) {
          children = new Map()
          dirs.set(dir, children)
        }
        children.set(name, id)
        if (entries.isDir(id)) {
          const path = join(dir, name)
          if (!dirs.has(path)) dirs.set(path, new Map())
        }
      }
    }
    entries.trim()
    return index
  }

  * records (): Iterable<IndexRecord> {
    if (this.rootId !== undefined) yield { dir: '/', name: ROOT_RECORD_NAME, entry: this.entries.stored(this.rootId) }
    for (const [dir, children] of this.dirs) {
      for (const [name, id] of children) yield { dir, name, entry: this.entries.stored(id) }
    }
  }

  get root (): IndexEntry | undefined {
    return this.rootId === undefined ? undefined : this.entries.get(this.rootId)
  }

  /** The entry of `name` inside directory `dir`, or undefined. */
  child (dir: string, name: string): IndexEntry | undefined {
    const id = this.dirs.get(dir)?.get(name)
    return id === undefined ? undefined : this.entries.get(id)
  }

  lookup (path: string): IndexEntry | undefined {
    if (path === '/') return this.root
    const slash = path.lastIndexOf('/')
    return this.child(slash === 0 ? '/' : path.slice(0, slash), path.slice(slash + 1))
  }

  /** Whether `path` names a directory of the merged lower view; cheaper than a lookup. */
  isDir (path: string): boolean {
    return this.dirs.has(path)
  }

  /**
   * The children of a directory of the merged lower view (none when it is not one) as a listing
   * shows them, unpacking no entry: a listing of 10,000 names right after the mount, while the
   * unpacking is still interpreted, took half as long again with whole entries.
   */
  forEachListed (dir: string, fn: (name: string, mode: number, layer: number, ino: number) => void): void {
    const children = this.dirs.get(dir)
    if (children === undefined) return
    const { entries } = this
    for (const [name, id] of children) fn(name, entries.mode(id), entries.layer(id), entries.ino(id))
  }

  /** The real path of an entry's topmost copy. */
  realPath (path: string, entry: IndexEntry): string {
    return path === '/' ? this.layerDirs[entry.layer] : this.layerDirs[entry.layer] + path
  }

  get size (): number {
    let n = 0
    for (const children of this.dirs.values()) n += children.size
    return n
  }

  private apply (layer: number, entry: LayerEntry): void {
    const { entries } = this
    if (entry.path === '/') {
      if (entry.opaque === true) this.clear('/')
      const merged = this.rootId !== undefined && entry.opaque !== true
      if (this.rootId === undefined) this.rootId = entries.add(layer, entry.attr, merged)
      else entries.set(this.rootId, layer, entry.attr, merged)
      return
    }
    const slash = entry.path.lastIndexOf('/')
    const dir = slash === 0 ? '/' : entry.path.slice(0, slash)
    const name = entry.path.slice(slash + 1)
    const children = this.dirs.get(dir)
    // A layer always carries its own copy of every parent, applied just before: a missing parent
    // here only happens under a whiteout of this very layer, which hides the name anyway.
    if (children === undefined) return
    const prev = children.get(name)
    if (entry.whiteout === true) {
      if (prev !== undefined) this.remove(entry.path, prev)
      children.delete(name)
      return
    }
    const dirHere = isDirMode(entry.attr.mode)
    if (prev !== undefined && entries.isDir(prev) && dirHere && entry.opaque !== true) {
      entries.set(prev, layer, entry.attr, true)
      return
    }
    if (prev !== undefined) {
      this.remove(entry.path, prev)
      entries.set(prev, layer, entry.attr, false, entry.target)
    } else {
      children.set(name, entries.add(layer, entry.attr, false, entry.target))
    }
    if (dirHere) this.dirs.set(entry.path, new Map())
  }

  /** Drops what a replaced entry `id` at `path` held below it. */
  private remove (path: string, id: number): void {
    if (this.entries.isDir(id)) {
      this.clear(path)
      this.dirs.delete(path)
    }
  }

  private clear (dir: string): void {
    const children = this.dirs.get(dir)
    if (children === undefined) return
    for (const [name, child] of children) this.remove(join(dir, name), child)
    children.clear()
  }
}

const isDirMode = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR

export function join (dir: string, name: string): string {
  return dir === '/' ? '/' + name : dir + '/' + name
}
