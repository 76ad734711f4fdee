import type { NodeAttr } from '../layers/entry.js'
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

/** Numbers per entry: those of a stored entry, in its order. */
const STRIDE = 16
const LAYER = 0
const MODE = 1
const INO = 7
const MERGED = 15

/**
 * The entries of a lower index, packed: sixteen numbers per entry in one Float64Array, plus the
 * few symlink targets, addressed by a small integer. As objects (the entry, its attributes, three
 * time pairs, their boxed seconds: six objects per name for the collector to trace) an index of
 * /usr took 574 bytes of heap per name, names and maps included; packed, 151. Entries are
 * unpacked on each read: a short-lived object per lookup costs less than one kept per name.
 */
export class PackedEntries {
  private data = new Float64Array(STRIDE * 1024)
  private count = 0
  private readonly targets = new Map<number, string>()

  /** A new entry; its number. */
  add (layer: number, attr: NodeAttr, merged: boolean, target?: string): number {
    const id = this.next()
    this.set(id, layer, attr, merged, target)
    return id
  }

  addStored (s: StoredEntry): number {
    const id = this.next()
    for (let i = 0; i < STRIDE; i++) this.data[id * STRIDE + i] = s[i] as number
    if (s[STRIDE] !== undefined) this.targets.set(id, s[STRIDE])
    return id
  }

  /** Replaces entry `id` in place. */
  set (id: number, layer: number, attr: NodeAttr, merged: boolean, target?: string): void {
    const d = this.data
    const o = id * STRIDE
    d[o] = layer
    d[o + 1] = attr.mode
    d[o + 2] = attr.uid
    d[o + 3] = attr.gid
    d[o + 4] = attr.size
    d[o + 5] = attr.rdev
    d[o + 6] = attr.nlink
    d[o + 7] = attr.ino
    d[o + 8] = attr.blocks
    d[o + 9] = attr.atime[0]
    d[o + 10] = attr.atime[1]
    d[o + 11] = attr.mtime[0]
    d[o + 12] = attr.mtime[1]
    d[o + 13] = attr.ctime[0]
    d[o + 14] = attr.ctime[1]
    d[o + MERGED] = merged ? 1 : 0
    if (target !== undefined) this.targets.set(id, target)
    else this.targets.delete(id)
  }

  get (id: number): IndexEntry {
    const d = this.data
    const o = id * STRIDE
    const entry: IndexEntry = {
      layer: d[o],
      attr: {
        mode: d[o + 1],
        uid: d[o + 2],
        gid: d[o + 3],
        size: d[o + 4],
        rdev: d[o + 5],
        nlink: d[o + 6],
        ino: d[o + 7],
        blocks: d[o + 8],
        atime: [d[o + 9], d[o + 10]],
        mtime: [d[o + 11], d[o + 12]],
        ctime: [d[o + 13], d[o + 14]]
      }
    }
    if (d[o + MERGED] === 1) entry.merged = true
    const target = this.targets.get(id)
    if (target !== undefined) entry.target = target
    return entry
  }

  stored (id: number): StoredEntry {
    // A loop, not Array.from(subarray): that took 2-7 µs an entry, most of storing an index.
    const d = this.data
    const o = id * STRIDE
    const out = new Array<number>(STRIDE) as StoredEntry
    for (let i = 0; i < STRIDE; i++) out[i] = d[o + i]
    const target = this.targets.get(id)
    if (target !== undefined) out.push(target)
    return out
  }

  isDir (id: number): boolean {
    return (this.data[id * STRIDE + MODE] & S_IFMT) === S_IFDIR
  }

  mode (id: number): number {
    return this.data[id * STRIDE + MODE]
  }

  layer (id: number): number {
    return this.data[id * STRIDE + LAYER]
  }

  ino (id: number): number {
    return this.data[id * STRIDE + INO]
  }

  /** Gives back the room kept for more entries: the index is complete. */
  trim (): void {
    this.resize(this.count * STRIDE)
  }

  /** Room for one more entry; its number. */
  private next (): number {
    if ((this.count + 1) * STRIDE > this.data.length) this.resize(this.data.length * 2)
    return this.count++
  }

  private resize (length: number): void {
    const next = new Float64Array(Math.max(length, STRIDE))
    next.set(this.data.subarray(0, Math.min(this.data.length, next.length)))
    this.data = next
  }
}
