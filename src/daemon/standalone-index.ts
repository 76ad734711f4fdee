import { join } from 'node:path'
import type { Logger } from 'pino'
import { LowerIndex, type IndexRecord } from '../overlay/lower-index.js'
import { OverlayIndexStore } from '../store/overlay-index-store.js'
import { fingerprintLowers } from './lower-fingerprint.js'

/**
 * The lower index of a standalone overlay with a work dir: the one stored in
 * `<workdir>/stratafs` when the lower dirs are unchanged since it was built, else built and stored.
 * The store is closed before the mount: a server can outlive its mount by a moment (it learns of
 * a `fusermount -u` only when it next reads the device), and must not hold the lock the next
 * mount needs.
 */
export async function standaloneLowerIndex (lowerDirs: readonly string[], workDir: string, log: Logger): Promise<LowerIndex> {
  const store = await OverlayIndexStore.open(join(workDir, 'stratafs'))
  try {
    const started = performance.now()
    const { digest, racy } = fingerprintLowers(lowerDirs)
    const checked = performance.now()
    const stored = await store.load<IndexRecord['entry']>(digest)
    if (stored !== undefined) {
      const index = await LowerIndex.fromRecords(lowerDirs, stored)
      log.info({ layers: lowerDirs.length, entries: index.size, fingerprintMs: ms(checked - started), loadMs: ms(performance.now() - checked) }, 'lower index loaded')
      return index
    }
    const index = await LowerIndex.build(lowerDirs)
    const built = performance.now()
    // A racy fingerprint could match a later, different tree: the index is used but not kept.
    const records = racy ? 0 : await store.save(digest, index.records())
    log.info({
      layers: lowerDirs.length, entries: index.size, stored: records, racy,
      fingerprintMs: ms(checked - started), buildMs: ms(built - checked), persistMs: ms(performance.now() - built)
    }, 'lower index built')
    return index
  } finally {
    await store.close()
  }
}

const ms = (n: number): number => Math.round(n)
