import type { AbstractSublevel } from 'abstract-level'
import type { Level } from 'level'
import type { ChainRecord } from './records.js'

type Db = Level<string, unknown>
type Sub<V> = AbstractSublevel<Db, string | Buffer | Uint8Array, string, V>

interface Marker { records: number; created: string }

const batchSize = 5000

/**
 * Persisted merged views of layer stacks, each under a key (a ChainID, or the standalone overlay's
 * fingerprint of its lower dirs): one record per name, `<key>/<dir>\0<name>`, so a directory is
 * one range scan. A key's marker is written last, so an index cut short by a crash is never taken
 * for a whole one. Keys must not contain '/'.
 */
export class IndexTable {
  private readonly markers: Sub<Marker>
  private readonly records: Sub<unknown>

  constructor (db: Db) {
    this.markers = db.sublevel<string, Marker>('chains', { valueEncoding: 'json' })
    this.records = db.sublevel<string, unknown>('index', { valueEncoding: 'json' })
  }

  async has (key: string): Promise<boolean> {
    return (await this.markers.get(key)) !== undefined
  }

  keys (): AsyncIterable<string> {
    return this.markers.keys()
  }

  /** Replaces the index under `key`; the number of records written. */
  async put<E> (key: string, records: Iterable<ChainRecord<E>>): Promise<number> {
    await this.drop(key)
    let n = 0
    let batch = this.records.batch()
    for (const r of records) {
      batch.put(recordKey(key, r.dir, r.name), r.entry)
      if (++n % batchSize === 0) {
        await batch.write()
        batch = this.records.batch()
      }
    }
    await batch.write()
    await this.markers.put(key, { records: n, created: new Date().toISOString() })
    return n
  }

  /** Every record under `key` in key order (a directory's entries are contiguous). */
  async * get<E> (key: string): AsyncIterable<ChainRecord<E>> {
    const prefix = `${key}/`
    for await (const [k, entry] of this.records.iterator({ gte: prefix, lt: `${key}0` })) {
      const rest = k.slice(prefix.length)
      const sep = rest.indexOf('\0')
      yield { dir: rest.slice(0, sep), name: rest.slice(sep + 1), entry: entry as E }
    }
  }

  /** Whether `path` ('/a/b') is in the merged view under `key`. */
  async contains (key: string, path: string): Promise<boolean> {
    const cut = path.lastIndexOf('/')
    const dir = cut <= 0 ? '/' : path.slice(0, cut)
    return (await this.records.get(recordKey(key, dir, path.slice(cut + 1)))) !== undefined
  }

  async drop (key: string): Promise<void> {
    await this.records.clear({ gte: `${key}/`, lt: `${key}0` })
    await this.markers.del(key)
  }
}

/** NUL sorts first, so one directory's entries form one key range. */
function recordKey (key: string, dir: string, name: string): string {
  return `${key}/${dir}\0${name}`
}
