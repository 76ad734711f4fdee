import { createHash } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { S_IFDIR, S_IFMT } from '../layers/whiteout.js'
import { lstat } from '../sys/index.js'

export interface LowerFingerprint {
  /** `sha256:` of the lower dirs' real paths and of every entry's identity and change time. */
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
 * nothing cheaper is safe. The readdir order is the filesystem's: an unchanged directory lists the
 * same way, and a differing order only costs a rebuild.
 */
export function fingerprintLowers (layerDirs: readonly string[]): LowerFingerprint {
  const started = Date.now()
  const hash = createHash('sha256')
  let newest = 0
  // Hashed a few thousand entries at a time: one update per entry costs a third of the walk.
  let chunk = `stratafs lower fingerprint 1\0${layerDirs.length}\0`
  for (const root of layerDirs) {
    chunk += `${root}\0`
    const stack = ['']
    while (stack.length > 0) {
      const rel = stack.pop() as string
      const st = lstat(root + rel)
      const ctimeMs = st.ctime[0] * 1000 + st.ctime[1] / 1e6
      if (ctimeMs > newest) newest = ctimeMs
      chunk += `${rel}\0${st.dev}\0${st.ino}\0${st.ctime[0]}.${st.ctime[1]}\0${st.mode}\n`
      if (chunk.length > 1 << 16) {
        hash.update(chunk)
        chunk = ''
      }
      if ((st.mode & S_IFMT) === S_IFDIR) for (const name of readdirSync(root + rel)) stack.push(`${rel}/${name}`)
    }
  }
  hash.update(chunk)
  return { digest: `sha256:${hash.digest('hex')}`, racy: newest >= started - RACY_MS }
}
