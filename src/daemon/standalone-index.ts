import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { LowerIndex, type IndexRecord } from '../overlay/lower-index.js'
import type { OverlayIndexStore } from '../store/overlay-index-store.js'
import { fingerprintLowers, LowerFingerprinter } from './lower-fingerprint.js'

/** The lower index of a standalone overlay, and what keeps it in the work dir once the mount answers. */
export interface StandaloneIndex {
  index: LowerIndex
  keep (): Promise<void>
}

/**
 * The lower index of a standalone overlay with a work dir: the one stored in `<workdir>/stratafs`
 * when the lower dirs are unchanged since it was built, else built, and stored by `keep` after
 * the mount answers. Every container starts with a fresh work dir: its mount loads no LevelDB
 * before it answers and walks the layers once, the build taking the fingerprint. The store is
 * closed as soon as it has served. A server can outlive its mount by a moment (it learns of a
 * `fusermount -u` only when it next reads the device) or still be storing: the next mount waits
 * for the lock a while.
 */
export async function standaloneLowerIndex (lowerDirs: readonly string[], workDir: string, log: Logger): Promise<StandaloneIndex> {
  const dir = join(workDir, 'stratafs')
  let started = performance.now()
  let fingerprintMs: number | undefined
  if (existsSync(dir)) {
    const store = await openStore(dir)
    try {
      if (await store.holdsAny()) {
        const { digest } = fingerprintLowers(lowerDirs)
        const checked = performance.now()
        fingerprintMs = ms(checked - started)
        const stored = await store.load<IndexRecord['entry']>(digest)
        if (stored !== undefined) {
          const index = await LowerIndex.fromRecords(lowerDirs, stored)
          log.info({ layers: lowerDirs.length, entries: index.size, fingerprintMs, loadMs: ms(performance.now() - checked) }, 'lower index loaded')
          return { index, keep: async () => {} }
        }
        started = checked
      }
    } finally {
      await store.close()
    }
  }
  const fingerprinter = new LowerFingerprinter(lowerDirs)
  const index = await LowerIndex.build(lowerDirs, (layer, path, st) => fingerprinter.seen(layer, path, st))
  const { digest, racy } = fingerprinter.result()
  log.info({ layers: lowerDirs.length, entries: index.size, racy, fingerprintMs, buildMs: ms(performance.now() - started) }, 'lower index built')
  return {
    index,
    // A racy fingerprint could match a later, different tree: the index is used but not kept.
    keep: async () => {
      if (racy) return
      const began = performance.now()
      const store = await openStore(dir)
      try {
        const records = await store.save(digest, index.records())
        log.info({ records, persistMs: ms(performance.now() - began) }, 'lower index stored')
      } finally {
        await store.close()
      }
    }
  }
}

/** How long a mount waits for the server before it to let go of the work dir's store. */
const LOCK_WAIT_MS = 5000

/** Loaded only when used: a work dir's first mount needs no LevelDB before it answers. */
async function openStore (dir: string): Promise<OverlayIndexStore> {
  const { OverlayIndexStore } = await import('../store/overlay-index-store.js')
  return await OverlayIndexStore.open(dir, LOCK_WAIT_MS)
}

const ms = (n: number): number => Math.round(n)
