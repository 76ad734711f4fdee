import { readdirSync, readlinkSync } from 'node:fs'
import { lgetxattr, lstat, type Stat } from '../sys/index.js'
import type { LayerEntry, NodeAttr } from './entry.js'
import {
  OPAQUE_MARKER, OPAQUE_XATTR, S_IFCHR, isKernelWhiteout, isOpaqueValue, whiteoutTarget, WHITEOUT_PREFIX
} from './whiteout.js'

interface Pending {
  /** Path inside the layer, '/' for the root. */
  path: string
  /** Where its attributes live on disk: the node itself, or the `.wh.` marker for an OCI whiteout. */
  disk: string
  ociWhiteout: boolean
}

function toAttr (st: Stat): NodeAttr {
  return {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    rdev: st.rdev,
    nlink: st.nlink,
    ino: st.ino,
    blocks: st.blocks,
    atime: st.atime,
    mtime: st.mtime,
    ctime: st.ctime
  }
}

/** Both whiteout forms look the same to consumers: a char 0/0 with the marker's permissions. */
function whiteoutAttr (st: Stat): NodeAttr {
  return { ...toAttr(st), mode: S_IFCHR | (st.mode & 0o7777), rdev: 0, size: 0, blocks: 0 }
}

function byteOrder (a: [Buffer, unknown], b: [Buffer, unknown]): number {
  return Buffer.compare(a[0], b[0])
}

function childPath (dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

/**
 * The children of one directory in byte order of their names, markers folded in: `.wh.<name>`
 * becomes a whiteout at <name> (a real <name> next to it wins, as it would in the kernel), and
 * `.wh..wh..opq` is reported through the returned flag.
 */
function listDir (disk: string, path: string): { children: Pending[], opaqueMarker: boolean } {
  // Names only: every child is lstat'ed next, which says its type.
  const names = readdirSync(disk)
  const real = new Set<string>()
  for (const name of names) if (!name.startsWith(WHITEOUT_PREFIX)) real.add(name)
  let opaqueMarker = false
  const keyed: Array<[Buffer, Pending]> = []
  for (const name of names) {
    const diskPath = `${disk}/${name}`
    if (!name.startsWith(WHITEOUT_PREFIX)) {
      keyed.push([Buffer.from(name), { path: childPath(path, name), disk: diskPath, ociWhiteout: false }])
      continue
    }
    if (name === OPAQUE_MARKER) { opaqueMarker = true; continue }
    const hidden = whiteoutTarget(name)
    if (hidden === undefined || real.has(hidden)) continue
    keyed.push([Buffer.from(hidden), { path: childPath(path, hidden), disk: diskPath, ociWhiteout: true }])
  }
  keyed.sort(byteOrder)
  return { children: keyed.map(([, p]) => p), opaqueMarker }
}

export interface ScanOptions {
  /** Called with the lstat of every node the walk reads (a `.wh.` marker's for its whiteout), in walk order. */
  seen?: (path: string, st: Stat) => void
  /**
   * Only the tree's shape and attributes: symlink targets and opaque xattrs are not read (their
   * changes move a ctime `seen` gets), for a walk that identifies the tree.
   */
  identityOnly?: boolean
}

/**
 * Walks a layer directory depth-first, parents before children and siblings in byte order of
 * their names, yielding the root ('/') first. Whiteouts and opaque markers of both forms are
 * folded into the entries they describe; marker files never appear. Sync because it runs when an
 * index is built, where a syscall per entry through the thread pool would cost more than it saves.
 */
export function * scanLayer (dir: string, opts: ScanOptions = {}): Generator<LayerEntry> {
  const { seen, identityOnly = false } = opts
  const stack: Pending[] = [{ path: '/', disk: dir.replace(/\/+$/, '') || '/', ociWhiteout: false }]
  while (stack.length > 0) {
    const item = stack.pop() as Pending
    const st = lstat(item.disk)
    seen?.(item.path, st)
    if (item.ociWhiteout || isKernelWhiteout(st.mode, st.rdev)) {
      yield { path: item.path, whiteout: true, attr: whiteoutAttr(st) }
      continue
    }
    const entry: LayerEntry = { path: item.path, attr: toAttr(st) }
    if (st.mode >> 12 === 0o12) {
      if (!identityOnly) entry.target = readlinkSync(item.disk)
      yield entry
      continue
    }
    if (st.mode >> 12 !== 0o04) {
      yield entry
      continue
    }
    const { children, opaqueMarker } = listDir(item.disk, item.path)
    if (opaqueMarker || (!identityOnly && isOpaqueValue(lgetxattr(item.disk, OPAQUE_XATTR)))) entry.opaque = true
    yield entry
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i])
  }
}
