import { chainIds } from '../layers/digest.js'
import type { Logger } from '../log.js'
import { LowerIndex, type IndexRecord } from '../overlay/lower-index.js'
import type { Store } from '../store/store.js'

/**
 * Lower indexes by ChainID: from memory, else from the store's chain index, else built from the
 * layer directories and persisted. Concurrent requests for one chain share one build.
 */
export class LowerIndexes {
  private readonly cache = new Map<string, Promise<LowerIndex>>()

  constructor (private readonly store: Store, private readonly log: Logger) {}

  /** The ChainID of a whole stack; '' for a stack with no layers. */
  static chainId (diffIds: string[]): string {
    return chainIds(diffIds).at(-1) ?? ''
  }

  get (diffIds: string[]): Promise<LowerIndex> {
    const chainId = LowerIndexes.chainId(diffIds)
    let index = this.cache.get(chainId)
    if (index === undefined) {
      index = this.load(chainId, diffIds)
      this.cache.set(chainId, index)
      index.catch(() => this.cache.delete(chainId))
    }
    return index
  }

  /** Drops cached indexes whose chain the store no longer holds (after an image rm). */
  async prune (): Promise<void> {
    for (const chainId of [...this.cache.keys()]) {
      if (chainId !== '' && !await this.store.hasChainIndex(chainId)) this.cache.delete(chainId)
    }
  }

  private async load (chainId: string, diffIds: string[]): Promise<LowerIndex> {
    const layerDirs = diffIds.map((d) => this.store.layerDir(d))
    const started = performance.now()
    if (chainId !== '' && await this.store.hasChainIndex(chainId)) {
      const index = await LowerIndex.fromRecords(layerDirs, this.store.chainIndex<IndexRecord['entry']>(chainId))
      this.log.debug({ chainId, ms: Math.round(performance.now() - started) }, 'lower index loaded')
      return index
    }
    const index = await LowerIndex.build(layerDirs)
    const built = performance.now()
    const records = chainId === '' ? 0 : await this.store.putChainIndex(chainId, index.records())
    this.log.info({ chainId, records, buildMs: Math.round(built - started), persistMs: Math.round(performance.now() - built) }, 'lower index built')
    return index
  }
}
