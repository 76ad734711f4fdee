import type { DirEntry } from '../overlay/overlay.js'

/** struct fuse_dirent: ino u64, off u64, namelen u32, type u32, then the name, padded to 8. */
const NAME_OFFSET = 24

function recordLength (nameBytes: number): number {
  return (NAME_OFFSET + nameBytes + 7) & ~7
}

/**
 * A whole listing in the kernel's own format, built once per opendir (and on rewind): each readdir
 * then answers a slice of it. Each record's `off` is where the next one starts, which is the
 * offset the kernel sends back to continue.
 */
export function direntBuffer (entries: readonly DirEntry[]): Buffer {
  const lengths = entries.map(e => Buffer.byteLength(e.name))
  let total = 0
  for (const n of lengths) total += recordLength(n)
  const out = Buffer.alloc(total)
  let pos = 0
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!
    const next = pos + recordLength(lengths[i]!)
    out.writeUInt32LE(e.ino % 0x100000000, pos)
    out.writeUInt32LE(Math.floor(e.ino / 0x100000000), pos + 4)
    out.writeUInt32LE(next, pos + 8)
    out.writeUInt32LE(lengths[i]!, pos + 16)
    out.writeUInt32LE((e.mode >>> 12) & 0xf, pos + 20)
    out.write(e.name, pos + NAME_OFFSET, 'utf8')
    pos = next
  }
  return out
}

/** The whole records from `offset` that fit in `size` bytes. */
export function direntSlice (listing: Buffer, offset: number, size: number): Buffer {
  let end = offset
  while (end < listing.length) {
    const next = end + recordLength(listing.readUInt32LE(end + 16))
    if (next - offset > size) break
    end = next
  }
  return listing.subarray(Math.min(offset, listing.length), end)
}
