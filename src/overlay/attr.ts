import type { NodeAttr, Timespec } from '../layers/entry.js'

/** What the merged view shows of a name: a stat with the overlay's own inode number. */
export interface Attr {
  mode: number
  uid: number
  gid: number
  size: number
  nlink: number
  ino: number
  rdev: number
  blksize: number
  blocks: number
  atime: Timespec
  mtime: Timespec
  ctime: Timespec
}

/** The identity of the caller of a request, as the kernel reports it. */
export interface Caller {
  uid: number
  gid: number
  pid: number
}

/**
 * Inode numbers: names from the upper keep the upper's own inode number (below 2^32 on ext4 and
 * tmpfs); a lower name gets `(layer + 1) * 2^32 + its inode in that layer`, so hard links inside
 * a layer share a number and two layers never collide. A copied-up file keeps its lower number.
 */
export const LOWER_INO_BASE = 2 ** 32

export function lowerIno (layer: number, ino: number): number {
  return (layer + 1) * LOWER_INO_BASE + ino
}

export function toAttr (src: NodeAttr, ino: number, nlink = src.nlink): Attr {
  return {
    mode: src.mode,
    uid: src.uid,
    gid: src.gid,
    size: src.size,
    nlink,
    ino,
    rdev: src.rdev,
    blksize: 4096,
    blocks: src.blocks,
    atime: src.atime,
    mtime: src.mtime,
    ctime: src.ctime
  }
}
