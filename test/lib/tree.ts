import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync, type BigIntStats } from 'node:fs'
import { join } from 'node:path'

/**
 * A tree as a process sees it through ordinary syscalls, so two mounts of the same image (ours and
 * the kernel's) can be compared field by field. Paths are absolute inside the tree ('/' is the
 * root). Hard links are recorded as groups of paths, never as inode numbers, which legitimately
 * differ between two filesystems.
 */

/**
 * 'ghost': readdir lists the name but lstat says ENOENT. Kernel overlayfs does this for whiteouts
 * inside a lower directory that is not merged with anything (it passes readdir straight through),
 * so the oracle's ghosts are its own deviation; ours are bugs.
 */
export type NodeType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket' | 'ghost'

export interface TreeNode {
  type: NodeType
  /** Permission bits only (07777). */
  mode: number
  uid: number
  gid: number
  /** Files and symlinks. */
  size?: number
  sha256?: string
  target?: string
  /** Devices: 'major:minor'. */
  rdev?: string
  mtimeNs: bigint
  /** Not for directories: overlayfs reports 1 for merged ones. */
  nlink?: number
  /** name → hex value, trusted.overlay.* left out. */
  xattrs: Record<string, string>
  /** Paths sharing this node's inode, sorted, when there is more than one. */
  linkGroup?: string[]
  ino: bigint
}

export type Tree = Map<string, TreeNode>

export interface SnapshotOptions {
  xattrs?: boolean
  /** Skip content hashing (big trees where only the shape matters). */
  contents?: boolean
}

function typeOf (st: BigIntStats): NodeType {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isCharacterDevice()) return 'char'
  if (st.isBlockDevice()) return 'block'
  if (st.isFIFO()) return 'fifo'
  return 'socket'
}

function majorMinor (rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)
  return `${major}:${minor}`
}

function unescapeGetfattr (s: string): string {
  return Buffer.from(s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), 'latin1').toString('utf8')
}

/** All xattrs under `root` in one `getfattr -R` run: absolute path → name → hex. */
export function readXattrs (root: string): Map<string, Record<string, string>> {
  const res = spawnSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], {
    encoding: 'latin1', maxBuffer: 1 << 30
  })
  if (res.error !== undefined) throw res.error
  const out = new Map<string, Record<string, string>>()
  let current: Record<string, string> | undefined
  for (const line of res.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      current = {}
      out.set(unescapeGetfattr(line.slice(8)).replace(/\/+$/, '') || '/', current)
    } else if (line !== '' && current !== undefined) {
      const eq = line.indexOf('=')
      const name = eq < 0 ? line : line.slice(0, eq)
      const raw = eq < 0 ? '' : line.slice(eq + 1)
      const value = raw === '""' ? '' : raw.replace(/^0x/, '')
      if (!name.startsWith('trusted.overlay.')) current[name] = value
    }
  }
  return out
}

export function snapshot (root: string, opts: SnapshotOptions = {}): Tree {
  const tree: Tree = new Map()
  const xattrs = opts.xattrs === false ? new Map<string, Record<string, string>>() : readXattrs(root)
  const base = root.replace(/\/+$/, '')
  const visit = (abs: string, rel: string): void => {
    const st = lstatSync(abs, { bigint: true, throwIfNoEntry: false })
    if (st === undefined) {
      tree.set(rel, { type: 'ghost', mode: 0, uid: 0, gid: 0, mtimeNs: 0n, xattrs: {}, ino: 0n })
      return
    }
    const type = typeOf(st)
    const node: TreeNode = {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      xattrs: xattrs.get(abs) ?? {},
      ino: st.ino
    }
    if (type !== 'dir') node.nlink = Number(st.nlink)
    if (type === 'file' || type === 'symlink') node.size = Number(st.size)
    if (type === 'file' && opts.contents !== false) node.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex')
    if (type === 'symlink') node.target = readlinkSync(abs)
    if (type === 'char' || type === 'block') node.rdev = majorMinor(st.rdev)
    tree.set(rel, node)
    if (type === 'dir') {
      for (const name of readdirSync(abs).sort()) visit(join(abs, name), rel === '/' ? `/${name}` : `${rel}/${name}`)
    }
  }
  visit(base === '' ? '/' : base, '/')
  const byIno = new Map<bigint, string[]>()
  for (const [path, node] of tree) {
    if (node.type === 'dir' || node.type === 'ghost') continue
    const group = byIno.get(node.ino) ?? []
    group.push(path)
    byIno.set(node.ino, group)
  }
  for (const group of byIno.values()) {
    if (group.length < 2) continue
    group.sort()
    for (const path of group) tree.get(path)!.linkGroup = group
  }
  return tree
}

export interface DiffOptions {
  /** Labels in messages. */
  names?: [string, string]
  /** Compare nanosecond mtimes (default true). */
  mtime?: boolean
  /** Compare link counts of non-directories (default true). */
  nlink?: boolean
  /** Compare the root's own attributes (default true). */
  root?: boolean
  /** Leave out ghost entries of one side (the kernel oracle's, say). */
  ignoreGhosts?: 'a' | 'b' | 'both'
}

const fmt = (key: string, v: unknown): string => {
  if (v === undefined) return '-'
  if (key === 'mode') return (v as number).toString(8).padStart(4, '0')
  if (Array.isArray(v)) return v.join(',')
  if (key === 'xattrs') return JSON.stringify(sortKeys(v as Record<string, string>))
  return String(v)
}

/** Human-readable differences, one per line; empty when the trees are equal. */
export function diffTrees (a: Tree, b: Tree, opts: DiffOptions = {}): string[] {
  const [na, nb] = opts.names ?? ['a', 'b']
  const out: string[] = []
  const keys: Array<keyof TreeNode> = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'rdev', 'xattrs', 'linkGroup']
  if (opts.mtime !== false) keys.push('mtimeNs')
  if (opts.nlink !== false) keys.push('nlink')
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort()
  for (const path of paths) {
    if (path === '/' && opts.root === false) continue
    const ignoreA = opts.ignoreGhosts === 'a' || opts.ignoreGhosts === 'both'
    const ignoreB = opts.ignoreGhosts === 'b' || opts.ignoreGhosts === 'both'
    const x = ignoreA && a.get(path)?.type === 'ghost' ? undefined : a.get(path)
    const y = ignoreB && b.get(path)?.type === 'ghost' ? undefined : b.get(path)
    if (x === undefined && y === undefined) continue
    if (x === undefined) { out.push(`${path}: only in ${nb} (${y!.type})`); continue }
    if (y === undefined) { out.push(`${path}: only in ${na} (${x.type})`); continue }
    for (const key of keys) {
      if (key === 'nlink' && x.type === 'dir') continue
      const vx = fmt(key, x[key])
      const vy = fmt(key, y[key])
      if (vx !== vy) out.push(`${path}: ${key} ${na}=${vx} ${nb}=${vy}`)
    }
  }
  return out
}

function sortKeys (r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([p], [q]) => p < q ? -1 : p > q ? 1 : 0))
}
