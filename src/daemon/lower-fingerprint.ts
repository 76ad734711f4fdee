import { createHash } from 'node:crypto'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { scanLayer } from '../layers/scan.js'
import type { Stat } from '../sys/index.js'

export interface LowerFingerprint {
  /**
   * `sha256:` of the lower dirs' real paths, of the opaque xattr an index of them reads, and of
   * every entry's identity and change time.
   */
  digest: string
  /**
   * Some entry changed so recently that a change right after it could leave the same ctime
   * (timestamps are coarser than the clock): such a fingerprint must not be trusted later.
   */
  racy: boolean
}

/** Wider than the timestamp granularity of any Linux filesystem a lower dir may live on (FAT: 2 s). */
const RACY_MS = 2500

/**
 * Identifies the content of plain lower dirs, which a user may edit between two mounts. Every
 * change to a node (data, mode, owner, xattrs, times) moves its ctime, and every change to a
 * directory's names moves the directory's ctime, and ctime cannot be set back, so the same
 * (path, dev, ino, ctime) of every entry means the same tree. That takes an lstat of every entry:
 * nothing cheaper is safe. It is fed the lstats a layer walk reads anyway, so an index build
 * takes its fingerprint in the same pass.
 */
export class LowerFingerprinter {
  private readonly hash = createHash('sha256')
  private readonly started = Date.now()
  private newest = 0
  // Hashed a few thousand entries at a time: one update per entry costs a third of the walk.
  private chunk: string

  constructor (layerDirs: readonly string[], xattrs: OverlayXattrs) {
    this.chunk = `stratafs lower fingerprint 3\0${xattrs.opaque}\0${layerDirs.length}\0${layerDirs.join('\0')}\0`
  }

  /** Entry `path` of layer `layer` (bottom = 0), as `scanLayer` walks it. */
  seen (layer: number, path: string, st: Stat): void {
    const ctimeMs = st.ctime[0] * 1000 + st.ctime[1] / 1e6
    if (ctimeMs > this.newest) this.newest = ctimeMs
    this.chunk += `${layer}\0${path}\0${st.dev}\0${st.ino}\0${st.ctime[0]}.${st.ctime[1]}\0${st.mode}\n`
    if (this.chunk.length > 1 << 16) {
      this.hash.update(this.chunk)
      this.chunk = ''
    }
  }

  result (): LowerFingerprint {
    this.hash.update(this.chunk)
    return { digest: `sha256:${this.hash.digest('hex')}`, racy: this.newest >= this.started - RACY_MS }
  }
}

/** The fingerprint alone, from a walk that reads no more than it needs. */
export function fingerprintLowers (layerDirs: readonly string[], xattrs: OverlayXattrs): LowerFingerprint {
  const fingerprint = new LowerFingerprinter(layerDirs, xattrs)
  layerDirs.forEach((root, layer) => {
    const walk = scanLayer(root, { identityOnly: true, seen: (path, st) => fingerprint.seen(layer, path, st) })
    while (walk.next().done !== true);
  })
  return fingerprint.result()
}
