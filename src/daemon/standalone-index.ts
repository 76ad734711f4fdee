import { join } from 'node:path'
import type { Logger } from 'pino'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { LowerIndex, type IndexRecord } from '../overlay/lower-index.js'
import { OverlayIndexStore } from '../store/overlay-index-store.js'
import { fingerprintLowers, LowerFingerprinter } from './lower-fingerprint.js'

/**
 * The lower index of a standalone overlay with a work dir: the one stored in
 * `<workdir>/stratafs` when the lower dirs are unchanged since it was built, else built and stored.
 * A work dir that holds no index (every container's first mount) is not fingerprinted apart:
 * the build's own walk takes the fingerprint, which saves a walk of every lower entry.
 * The store is closed before the mount: a server can outlive its mount by a moment (it learns of
 * a `fusermount -u` only when it next reads the device), and must not hold the lock the next
 * mount needs.
 *
 * A store that cannot be opened or written (LevelDB writes as it opens, so a full disk refuses
 * it) costs only the time a stored index saves: the index is built and not kept. Kernel
 * overlayfs mounts a full upper, and a container whose disk filled up must mount to be cleaned.
 */
export async function standaloneLowerIndex (lowerDirs: readonly string[], workDir: string, xattrs: OverlayXattrs, log: Logger): Promise<LowerIndex> {
  let store: OverlayIndexStore
  try {
    store = await OverlayIndexStore.open(join(workDir, 'stratafs'))
  } catch (err) {
    log.warn({ err }, 'cannot open the lower index store in the work dir: the index is built, not kept')
    return await builtInMemory(lowerDirs, xattrs, log)
  }
  try {
    let started = performance.now()
    let fingerprintMs: number | undefined
    if (await store.holdsAny()) {
      const { digest } = fingerprintLowers(lowerDirs, xattrs)
      const checked = performance.now()
      fingerprintMs = ms(checked - started)
      const stored = await store.load<IndexRecord['entry']>(digest)
      if (stored !== undefined) {
        const index = await LowerIndex.fromRecords(lowerDirs, stored)
        log.info({ layers: lowerDirs.length, entries: index.size, fingerprintMs, loadMs: ms(performance.now() - checked) }, 'lower index loaded')
        return index
      }
      started = checked
    }
    const fingerprinter = new LowerFingerprinter(lowerDirs, xattrs)
    const index = await LowerIndex.build(lowerDirs, { xattrs, seen: (layer, path, st) => fingerprinter.seen(layer, path, st) })
    const { digest, racy } = fingerprinter.result()
    const built = performance.now()
    // A racy fingerprint could match a later, different tree: the index is used but not kept.
    const records = racy ? 0 : await store.save(digest, index.records()).catch(err => {
      log.warn({ err }, 'cannot store the lower index in the work dir: it is used, not kept')
      return 0
    })
    log.info({
      layers: lowerDirs.length, entries: index.size, stored: records, racy,
      fingerprintMs, buildMs: ms(built - started), persistMs: ms(performance.now() - built)
    }, 'lower index built')
    return index
  } finally {
    await store.close().catch(err => log.warn({ err }, 'cannot close the lower index store'))
  }
}

/** The lower index, walked and kept in memory only. */
export async function builtInMemory (lowerDirs: readonly string[], xattrs: OverlayXattrs, log: Logger): Promise<LowerIndex> {
  const started = performance.now()
  const lower = await LowerIndex.build(lowerDirs, { xattrs })
  log.info({ layers: lowerDirs.length, entries: lower.size, ms: ms(performance.now() - started) }, 'lower index built')
  return lower
}

const ms = (n: number): number => Math.round(n)
