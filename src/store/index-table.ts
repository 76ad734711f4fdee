import type { AbstractSublevel } from 'abstract-level'
import type { Level } from 'level'
import type { ChainRecord } from './records.js'

type Db = Level<string, unknown>
type Sub<V> = AbstractSublevel<Db, string | Buffer | Uint8Array, string, V>

/**
 * `format` 3: one record per directory, entries as arrays. Markers of other formats belong to older
 * stores: their indexes are rebuilt.
 */
interface Marker { records: number; created: string; format?: number }

const FORMAT = 3
/** Directories written per LevelDB batch. */
const batchDirs = 500

/** A directory's entries as stored: [name, entry] pairs (names are never object keys). */
type DirValue = Array<[string, unknown]>

/**
 * Persisted merged views of layer stacks, each under a key (a ChainID, or the standalone overlay's
 * fingerprint of its lower dirs): one record per directory, `<key>/<dir>`, holding its entries, so
 * a whole index loads in as many reads as it has directories. 20,000 names took about 180 ms to
 * load and as long to store as a record per name; 60 and 70 ms as a record per directory. A
 * key's marker is written last, so an index cut short by a crash is never taken for a whole one.
 * Keys must not contain '/'.
 */
export class IndexTable {
  private readonly markers: Sub<Marker>
  private readonly records: Sub<DirValue>

  constructor (db: Db) {
    this.markers = db.sublevel<string, Marker>('chains', { valueEncoding: 'json' })
    this.records = db.sublevel<string, DirValue>('index', { valueEncoding: 'json' })
  }

  async has (key: string): Promise<boolean> {
    return (await this.markers.get(key))?.format === FORMAT
  }

  keys (): AsyncIterable<string> {
    return this.markers.keys()
  }

  /** Replaces the index under `key`; the number of names written. */
  async put<E> (key: string, records: Iterable<ChainRecord<E>>): Promise<number> {
    await this.drop(key)
    const dirs = new Map<string, DirValue>()
    let n = 0
    for (const r of records) {
      let entries = dirs.get(r.dir)
      if (entries === undefined) dirs.set(r.dir, entries = [])
      entries.push([r.name, r.entry])
      n++
    }
    let batch = this.records.batch()
    let inBatch = 0
    for (const [dir, entries] of dirs) {
      batch.put(recordKey(key, dir), entries)
      if (++inBatch === batchDirs) {
        await batch.write()
        batch = this.records.batch()
        inBatch = 0
      }
    }
    await batch.write()
    await this.markers.put(key, { records: n, created: new Date().toISOString(), format: FORMAT })
    return n
  }

  /**
   * Every record under `key`, in batches of whole directories: one promise per batch, as one
   * per record cost more than reading and parsing the records.
   */
  async * get<E> (key: string): AsyncIterable<Array<ChainRecord<E>>> {
    const prefix = `${key}/`
    const it = this.records.iterator({ gte: prefix, lt: `${key}0` })
    try {
      for (;;) {
        const dirs = await it.nextv(256)
        if (dirs.length === 0) return
        const batch: Array<ChainRecord<E>> = []
        for (const [k, entries] of dirs) {
          const dir = k.slice(prefix.length)
          for (const [name, entry] of entries) batch.push({ dir, name, entry: entry as E })
        }
        yield batch
      }
    } finally {
      await it.close()
    }
  }

  async drop (key: string): Promise<void> {
    await this.records.clear({ gte: `${key}/`, lt: `${key}0` })
    await this.markers.del(key)
  }
}

function recordKey (key: string, dir: string): string {
  return `${key}/${dir}`
}
