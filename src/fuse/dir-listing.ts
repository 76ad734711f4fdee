import type { DirEntry } from '../overlay/overlay.js'

/** A directory listing in the form the patched binding takes whole: see its readdir. */
export interface PackedListing {
  /** Every name, NUL-terminated. */
  names: Buffer
  /** Per name: mode, inode number's low 32 bits, its high bits. */
  attrs: Uint32Array
}

/**
 * Packs a listing into two buffers, so a directory of 10,000 names crosses into C as two values
 * rather than 20,000 (the binding read each name and stat with several N-API calls).
 */
export function packListing (entries: readonly DirEntry[]): PackedListing {
  const attrs = new Uint32Array(entries.length * 3)
  let text = ''
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!
    text += e.name + '\0'
    attrs[3 * i] = e.mode
    attrs[3 * i + 1] = e.ino % 0x100000000
    attrs[3 * i + 2] = Math.floor(e.ino / 0x100000000)
  }
  return { names: Buffer.from(text, 'utf8'), attrs }
}
