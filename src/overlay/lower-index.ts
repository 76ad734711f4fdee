import type { LayerEntry, NodeAttr } from '../layers/entry.js'
import { scanLayer } from '../layers/scan.js'
import type { Stat } from '../sys/index.js'
import { S_IFDIR, S_IFMT } from './mode.js'

/**
 * One name of the merged view of a layer stack. `layer` is the position (bottom = 0) of the
 * topmost copy, whose attributes the merged view shows. `merged` marks a directory that combines
 * copies from several layers: kernel overlayfs reports nlink 1 for those.
 */
export interface IndexEntry {
  layer: number
  attr: NodeAttr
  target?: string
  merged?: true
}

/**
 * An entry as persisted: its fields in a fixed order, without their names, which made most of
 * the stored bytes and of the JSON work of storing and loading an index:
 * [layer, mode, uid, gid, size, rdev, nlink, ino, blocks, atime s, ns, mtime s, ns, ctime s, ns,
 * merged (1 or 0), then the symlink target when there is one].
 */
export type StoredEntry = [number, number, number, number, number, number, number, number, number,
  number, number, number, number, number, number, number, string?]

/** A persisted form of the index: one record per name. */
export interface IndexRecord {
  dir: string
  name: string
  entry: StoredEntry
}

function storedEntry (e: IndexEntry): StoredEntry {
  const a = e.attr
  const out: StoredEntry = [e.layer, a.mode, a.uid, a.gid, a.size, a.rdev, a.nlink, a.ino, a.blocks,
    a.atime[0], a.atime[1], a.mtime[0], a.mtime[1], a.ctime[0], a.ctime[1], e.merged === true ? 1 : 0]
  if (e.target !== undefined) out.push(e.target)
  return out
}

function loadedEntry (s: StoredEntry): IndexEntry {
  const entry: IndexEntry = {
    layer: s[0],
    attr: {
      mode: s[1], uid: s[2], gid: s[3], size: s[4], rdev: s[5], nlink: s[6], ino: s[7], blocks: s[8],
      atime: [s[9], s[10]], mtime: [s[11], s[12]], ctime: [s[13], s[14]]
    }
  }
  if (s[15] === 1) entry.merged = true
  if (s[16] !== undefined) entry.target = s[16]
  return entry
}

export const ROOT_RECORD_NAME = ''

const isDir = (attr: NodeAttr): boolean => (attr.mode & S_IFMT) === S_IFDIR

/**
 * The merged view of the read-only layers of a stack, held in memory: lower layers never change,
 * so every lookup, getattr and readdir of a lower name is answered without a syscall, whatever
 * the depth of the stack.
 */
export class LowerIndex {
  readonly layerDirs: readonly string[]
  private readonly dirs = new Map<string, Map<string, IndexEntry>>()
  private rootEntry: IndexEntry | undefined

  private constructor (layerDirs: readonly string[]) {
    this.layerDirs = layerDirs
    this.dirs.set('/', new Map())
  }

  /**
   * Folds the layers bottom first, applying whiteouts and opaque directories of both forms.
   * `seen`: handed every node's lstat as it is read (see `ScanOptions.seen`).
   */
  static async build (layerDirs: readonly string[], seen?: (layer: number, path: string, st: Stat) => void): Promise<LowerIndex> {
    const index = new LowerIndex(layerDirs)
    for (let layer = 0; layer < layerDirs.length; layer++) {
      const opts = seen === undefined ? {} : { seen: (path: string, st: Stat) => seen(layer, path, st) }
      for await (const entry of scanLayer(layerDirs[layer], opts)) index.apply(layer, entry)
    }
    return index
  }

  static async fromRecords (layerDirs: readonly string[], batches: AsyncIterable<IndexRecord[]> | Iterable<IndexRecord[]>): Promise<LowerIndex> {
    const index = new LowerIndex(layerDirs)
    for await (const batch of batches) {
      for (const record of batch) {
        const { dir, name } = record
        const entry = loadedEntry(record.entry)
        if (name === ROOT_RECORD_NAME) {
          index.rootEntry = entry
          continue
        }
        let children = index.dirs.get(dir)
        if (children === undefined) {
          children = new Map()
          index.dirs.set(dir, children)
        }
        children.set(name, entry)
        if (isDir(entry.attr)) {
          const path = join(dir, name)
          if (!index.dirs.has(path)) index.dirs.set(path, new Map())
        }
      }
    }
    return index
  }

  * records (): Iterable<IndexRecord> {
    if (this.rootEntry !== undefined) yield { dir: '/', name: ROOT_RECORD_NAME, entry: storedEntry(this.rootEntry) }
    for (const [dir, children] of this.dirs) {
      for (const [name, entry] of children) yield { dir, name, entry: storedEntry(entry) }
    }
  }

  get root (): IndexEntry | undefined {
    return this.rootEntry
  }

  /** The entry of `name` inside directory `dir`, or undefined. */
  child (dir: string, name: string): IndexEntry | undefined {
    return this.dirs.get(dir)?.get(name)
  }

  lookup (path: string): IndexEntry | undefined {
    if (path === '/') return this.rootEntry
    const slash = path.lastIndexOf('/')
    return this.child(slash === 0 ? '/' : path.slice(0, slash), path.slice(slash + 1))
  }

  /** The children of a directory of the merged lower view (empty when it is not one). */
  list (dir: string): ReadonlyMap<string, IndexEntry> {
    return this.dirs.get(dir) ?? EMPTY
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
    if (entry.path === '/') {
      if (entry.opaque === true) this.clear('/')
      this.rootEntry = this.rootEntry === undefined || entry.opaque === true
        ? { layer, attr: entry.attr }
        : { layer, attr: entry.attr, merged: true }
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
    if (prev !== undefined && isDir(prev.attr) && isDir(entry.attr) && entry.opaque !== true) {
      children.set(name, { layer, attr: entry.attr, merged: true })
      return
    }
    if (prev !== undefined) this.remove(entry.path, prev)
    const next: IndexEntry = { layer, attr: entry.attr }
    if (entry.target !== undefined) next.target = entry.target
    children.set(name, next)
    if (isDir(entry.attr)) this.dirs.set(entry.path, new Map())
  }

  private remove (path: string, entry: IndexEntry): void {
    if (isDir(entry.attr)) {
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

const EMPTY: ReadonlyMap<string, IndexEntry> = new Map()

export function join (dir: string, name: string): string {
  return dir === '/' ? '/' + name : dir + '/' + name
}
