import { readlinkSync } from 'node:fs'
import { listDir, lstat, type Stat } from '../sys/index.js'
import type { LayerEntry, NodeAttr } from './entry.js'
import { OverlayXattrs } from './overlay-xattrs.js'
import { OPAQUE_MARKER, S_IFCHR, isKernelWhiteout, whiteoutTarget, WHITEOUT_PREFIX } from './whiteout.js'

interface Pending {
  /** Path inside the layer, '/' for the root. */
  path: string
  /** Where its attributes live on disk: the node itself, or the `.wh.` marker for an OCI whiteout. */
  disk: string
  /** The lstat of `disk`, taken when its directory was listed (the root's is taken when popped). */
  st?: Stat
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

function childPath (dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

/**
 * The children of one directory in byte order of their names, markers folded in: `.wh.<name>`
 * becomes a whiteout at <name> (a real <name> next to it wins, as it would in the kernel), and
 * `.wh..wh..opq` is reported through the returned flag.
 */
function listChildren (disk: string, path: string): { children: Pending[], opaqueMarker: boolean } {
  const listed = listDir(disk)
  const real = new Set<string>()
  for (const { name } of listed) if (!name.startsWith(WHITEOUT_PREFIX)) real.add(name)
  let opaqueMarker = false
  let folded = false
  const children: Pending[] = []
  for (const { name, st } of listed) {
    const diskPath = `${disk}/${name}`
    if (!name.startsWith(WHITEOUT_PREFIX)) {
      children.push({ path: childPath(path, name), disk: diskPath, st, ociWhiteout: false })
      continue
    }
    if (name === OPAQUE_MARKER) { opaqueMarker = true; continue }
    const hidden = whiteoutTarget(name)
    if (hidden === undefined || real.has(hidden)) continue
    children.push({ path: childPath(path, hidden), disk: diskPath, st, ociWhiteout: true })
    folded = true
  }
  // Listed in byte order of the names on disk; a marker's hidden name may belong elsewhere.
  if (folded) children.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)))
  return { children, opaqueMarker }
}

export interface ScanOptions {
  /** Called with the lstat of every node the walk reads (a `.wh.` marker's for its whiteout), in walk order. */
  seen?: (path: string, st: Stat) => void
  /**
   * Only the tree's shape and attributes: symlink targets and opaque xattrs are not read (their
   * changes move a ctime `seen` gets), for a walk that identifies the tree.
   */
  identityOnly?: boolean
  /** Whose opaque xattr marks an opaque directory: trusted (the default) or user (`userxattr`). */
  xattrs?: OverlayXattrs
}

/**
 * Walks a layer directory depth-first, parents before children and siblings in byte order of
 * their names, yielding the root ('/') first. Whiteouts and opaque markers of both forms are
 * folded into the entries they describe; marker files never appear. Sync because it runs when an
 * index is built, where a syscall per entry through the thread pool would cost more than it saves.
 */
export function * scanLayer (dir: string, opts: ScanOptions = {}): Generator<LayerEntry> {
  const { seen, identityOnly = false, xattrs = OverlayXattrs.trusted } = opts
  const stack: Pending[] = [{ path: '/', disk: dir.replace(/\/+$/, '') || '/', ociWhiteout: false }]
  while (stack.length > 0) {
    const item = stack.pop() as Pending
    const st = item.st ?? lstat(item.disk)
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
    const { children, opaqueMarker } = listChildren(item.disk, item.path)
    if (opaqueMarker || (!identityOnly && xattrs.isOpaque(item.disk))) entry.opaque = true
    yield entry
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i])
  }
}
