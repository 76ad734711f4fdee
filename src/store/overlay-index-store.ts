import { mkdir } from 'node:fs/promises'
import type { Level } from 'level'
import { IndexTable } from './index-table.js'
import { openDb } from './open-db.js'
import type { ChainRecord } from './records.js'

/**
 * The standalone overlay's own LevelDB, kept in its work dir: the lower index of the last mount,
 * under the fingerprint of the lower dirs it was built from. It holds one index at a time, as a
 * work dir serves one stack.
 */
export class OverlayIndexStore {
  private readonly table: IndexTable

  private constructor (private readonly db: Level<string, unknown>) {
    this.table = new IndexTable(db)
  }

  static async open (dir: string): Promise<OverlayIndexStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    return new OverlayIndexStore(await openDb(dir, `another stratafs overlay is using the work dir of ${dir}`))
  }

  /** Whether a whole index is stored, under whatever fingerprint. */
  async holdsAny (): Promise<boolean> {
    for await (const key of this.table.keys()) if (await this.table.has(key)) return true
    return false
  }

  /** The index stored under `fingerprint`, or undefined. */
  async load<E> (fingerprint: string): Promise<AsyncIterable<Array<ChainRecord<E>>> | undefined> {
    return await this.table.has(fingerprint) ? this.table.get<E>(fingerprint) : undefined
  }

  /** Stores an index under `fingerprint`, dropping any other; the number of records. */
  async save<E> (fingerprint: string, records: Iterable<ChainRecord<E>>): Promise<number> {
    for await (const key of this.table.keys()) if (key !== fingerprint) await this.table.drop(key)
    return this.table.put(fingerprint, records)
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}
