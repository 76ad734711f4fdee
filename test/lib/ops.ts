import { createHash } from 'node:crypto'
import {
  chmodSync, closeSync, constants, fstatSync, fsyncSync, ftruncateSync, lchownSync, linkSync, mkdirSync,
  openSync, readdirSync, readFileSync, readSync, renameSync, rmdirSync, statfsSync, symlinkSync, truncateSync,
  unlinkSync, writeSync, type Dirent
} from 'node:fs'
import { join } from 'node:path'
import { errorCode } from '../../src/errors.js'
import { lremovexattr, lsetxattr, lutimens, makedev, mknod, renameat2, RENAME_EXCHANGE, XATTR_CREATE } from '../../src/sys/index.js'
import { prng, type Timespec } from './layer-builder.js'

/**
 * Random filesystem operations, applied with ordinary syscalls to any tree (a kernel overlay, a
 * stratafs mount) so that two trees fed the same sequence can be compared result by result.
 * Paths are relative to the tree's root. Symlink targets only ever point at the link's own
 * directory or below, so following one never leaves the tree under test.
 */

export type Op =
  | { kind: 'create'; path: string; data: number; exclusive: boolean; mode: number }
  | { kind: 'write'; path: string; offset: number; data: number }
  | { kind: 'append'; path: string; data: number }
  | { kind: 'truncate'; path: string; len: number }
  | { kind: 'ftruncate'; path: string; len: number }
  | { kind: 'chmod'; path: string; mode: number }
  | { kind: 'chown'; path: string; uid: number; gid: number }
  | { kind: 'utimens'; path: string; atime: Timespec; mtime: Timespec }
  | { kind: 'setxattr'; path: string; name: string; value: string; create: boolean }
  | { kind: 'removexattr'; path: string; name: string }
  | { kind: 'mkdir'; path: string; mode: number }
  | { kind: 'mknod'; path: string; node: 'fifo' | 'char' }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'link'; path: string; to: string }
  | { kind: 'unlink'; path: string }
  | { kind: 'rmdir'; path: string }
  | { kind: 'rename'; path: string; to: string }
  | { kind: 'exchange'; path: string; to: string }
  | { kind: 'unlinkOpen'; path: string; data: number }
  | { kind: 'fsync'; path: string; data: number }
  | { kind: 'statfs'; path: string }
  | { kind: 'read'; path: string }
  | { kind: 'readdir'; path: string }

export type OpKind = Op['kind']

export interface ViewEntry { path: string; type: 'file' | 'dir' | 'symlink' | 'other' }

/** Every entry under `root` (root itself left out), sorted, without following symlinks. */
export function walkView (root: string): ViewEntry[] {
  const out: ViewEntry[] = []
  const visit = (rel: string): void => {
    let entries: Dirent[]
    try {
      entries = readdirSync(rel === '' ? root : join(root, rel), { withFileTypes: true })
    } catch {
      return
    }
    entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
    for (const e of entries) {
      const path = rel === '' ? e.name : `${rel}/${e.name}`
      const type = e.isDirectory() ? 'dir' : e.isFile() ? 'file' : e.isSymbolicLink() ? 'symlink' : 'other'
      out.push({ path, type })
      if (type === 'dir') visit(path)
    }
  }
  visit('')
  return out
}

/** Deterministic content: `size` bytes that depend on `tag`, so both trees get the same bytes. */
export function content (tag: number, size: number): Buffer {
  const unit = Buffer.from(`<${tag}>`)
  const buf = Buffer.alloc(size)
  for (let i = 0; i < size; i += unit.length) unit.copy(buf, i)
  return buf
}

const { O_APPEND, O_CREAT, O_EXCL, O_NONBLOCK, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } = constants

const dataSize = (tag: number): number => [0, 1, 17, 4096, 5000, 70_000][tag % 6]!

const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16)

function parentOf (path: string): string {
  const i = path.lastIndexOf('/')
  return i < 0 ? '' : path.slice(0, i)
}

/**
 * Every open is non-blocking: the trees hold fifos, and opening one for writing would otherwise
 * wait for a reader forever. Regular files ignore the flag.
 */
function writeThrough (path: string, flags: number, data: Buffer, mode: number): void {
  const fd = openSync(path, flags | O_NONBLOCK, mode)
  try {
    writeSync(fd, data)
  } finally {
    closeSync(fd)
  }
}

/**
 * Applies `op` under `root`; the outcome as a string that two trees must agree on: 'ok' plus what
 * was read back, or the errno name. Composite operations name the step that failed.
 */
export function applyOp (root: string, op: Op): string {
  const p = join(root, op.path)
  let step: string = op.kind
  const stepped = (name: string): void => { step = name }
  try {
    switch (op.kind) {
      case 'create':
        writeThrough(p, O_WRONLY | O_CREAT | O_TRUNC | (op.exclusive ? O_EXCL : 0), content(op.data, dataSize(op.data)), op.mode)
        return 'ok'
      case 'write': {
        const fd = openSync(p, O_RDWR | O_NONBLOCK)
        try {
          writeSync(fd, content(op.data, dataSize(op.data)), 0, dataSize(op.data), op.offset)
          return `ok size=${fstatSync(fd).size}`
        } finally {
          closeSync(fd)
        }
      }
      case 'append':
        writeThrough(p, O_WRONLY | O_CREAT | O_APPEND, content(op.data, dataSize(op.data)), 0o666)
        return 'ok'
      case 'truncate':
        truncateSync(p, op.len)
        return 'ok'
      case 'ftruncate': {
        const fd = openSync(p, O_RDWR | O_NONBLOCK)
        try {
          ftruncateSync(fd, op.len)
          return `ok size=${fstatSync(fd).size}`
        } finally {
          closeSync(fd)
        }
      }
      case 'chmod':
        chmodSync(p, op.mode)
        return 'ok'
      case 'chown':
        lchownSync(p, op.uid, op.gid)
        return 'ok'
      case 'utimens':
        lutimens(p, op.atime, op.mtime)
        return 'ok'
      case 'setxattr':
        lsetxattr(p, op.name, Buffer.from(op.value), op.create ? XATTR_CREATE : 0)
        return 'ok'
      case 'removexattr':
        lremovexattr(p, op.name)
        return 'ok'
      case 'mkdir':
        mkdirSync(p, op.mode)
        return 'ok'
      case 'mknod':
        mknod(p, op.node === 'fifo' ? constants.S_IFIFO | 0o640 : constants.S_IFCHR | 0o666, op.node === 'fifo' ? 0 : makedev(1, 3))
        return 'ok'
      case 'symlink':
        symlinkSync(op.target, p)
        return 'ok'
      case 'link':
        linkSync(p, join(root, op.to))
        return 'ok'
      case 'unlink':
        unlinkSync(p)
        return 'ok'
      case 'rmdir':
        rmdirSync(p)
        return 'ok'
      case 'rename':
        renameSync(p, join(root, op.to))
        return 'ok'
      case 'exchange':
        renameat2(p, join(root, op.to), RENAME_EXCHANGE)
        return 'ok'
      case 'unlinkOpen': {
        const fd = openSync(p, O_RDWR | O_NONBLOCK)
        try {
          const before = fstatSync(fd).size
          stepped('unlink')
          unlinkSync(p)
          stepped('write')
          const data = content(op.data, dataSize(op.data) + 3)
          writeSync(fd, data, 0, data.length, 0)
          stepped('read')
          const back = Buffer.alloc(data.length)
          const n = readSync(fd, back, 0, back.length, 0)
          stepped('fstat')
          const size = fstatSync(fd).size
          return `ok before=${before} size=${size} read=${n}:${digest(back.subarray(0, n))}`
        } finally {
          closeSync(fd)
        }
      }
      case 'fsync': {
        const fd = openSync(p, O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK, 0o666)
        try {
          writeSync(fd, content(op.data, dataSize(op.data)))
          fsyncSync(fd)
          return `ok size=${fstatSync(fd).size}`
        } finally {
          closeSync(fd)
        }
      }
      case 'statfs': {
        const s = statfsSync(p)
        return `ok bsize=${s.bsize} blocks=${s.blocks} files=${s.files}`
      }
      case 'read': {
        const fd = openSync(p, O_RDONLY | O_NONBLOCK)
        try {
          const b = readFileSync(fd)
          return `ok ${b.length}:${digest(b)}`
        } finally {
          closeSync(fd)
        }
      }
      case 'readdir':
        return `ok ${readdirSync(p).sort().join(',')}`
    }
  } catch (err) {
    const code = errorCode(err) ?? String(err)
    return step === op.kind ? code : `${step}: ${code}`
  }
}

/** How an operation moves mtimes, so a comparison checks only times nobody set to "now". */
export interface MtimeEffect {
  /** Paths whose inode's mtime becomes the current time (resolved after the operation, following symlinks). */
  contentOf: string[]
  /** New entries: their own inode (not a symlink's target) has the current time, under any later name. */
  made: string[]
  /** Paths (directories, or names that become whiteouts) whose own mtime becomes the current time. */
  names: string[]
  /** Subtrees moved: everything under them counts as changed. */
  subtrees: string[]
  /** Paths whose mtime the operation set explicitly. */
  set: string[]
}

export function mtimeEffect (op: Op): MtimeEffect {
  const none: MtimeEffect = { contentOf: [], made: [], names: [], set: [], subtrees: [] }
  switch (op.kind) {
    // An append opens with O_CREAT: it may make the file, and so change its directory.
    case 'create': case 'fsync': case 'append':
      return { ...none, contentOf: [op.path], names: [parentOf(op.path)] }
    case 'write': case 'truncate': case 'ftruncate':
      return { ...none, contentOf: [op.path] }
    case 'utimens':
      return { ...none, set: [op.path] }
    case 'mkdir': case 'mknod': case 'symlink':
      return { ...none, made: [op.path], names: [op.path, parentOf(op.path)] }
    case 'link':
      return { ...none, names: [parentOf(op.to)] }
    case 'unlink': case 'rmdir':
      return { ...none, names: [op.path, parentOf(op.path)] }
    case 'unlinkOpen':
      // It writes through its descriptor: the file's other hard links see that mtime too.
      return { ...none, contentOf: [op.path], names: [op.path, parentOf(op.path)] }
    case 'rename':
      return { ...none, names: [op.path, parentOf(op.path), parentOf(op.to)], subtrees: [op.to] }
    case 'exchange':
      return { ...none, names: [parentOf(op.path), parentOf(op.to)], subtrees: [op.path, op.to] }
    default:
      return none
  }
}

const FRESH = ['n', 'new', 'f', 'x.txt', 'd', 'sub', 'tmp']
const MODES = [0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o444, 0o000, 0o700]
const DIR_MODES = [0o755, 0o700, 0o1777, 0o2775, 0o555]
const XATTR_NAMES = ['user.a', 'user.b', 'user.k0', 'user.k1', 'user.mime_type']
const SYMLINK_TARGETS = ['f', 'x.txt', 'n1', 'sub/f', 'missing', 'd/e/f', '.']

const WEIGHTS: Array<[OpKind, number]> = [
  ['create', 10], ['write', 9], ['append', 5], ['truncate', 4], ['ftruncate', 3], ['chmod', 5], ['chown', 4],
  ['utimens', 5], ['setxattr', 5], ['removexattr', 3], ['mkdir', 6], ['mknod', 2], ['symlink', 3], ['link', 4],
  ['unlink', 8], ['rmdir', 5], ['rename', 10], ['unlinkOpen', 3], ['fsync', 2], ['statfs', 1], ['read', 4], ['readdir', 3]
]
/** Kinds only some runs generate: seeds recorded before a kind existed keep their sequences. */
const OPTIONAL_WEIGHTS: Array<[OpKind, number]> = [['exchange', 6]]

export interface GeneratorOptions {
  /** Also renameat2 RENAME_EXCHANGE. */
  exchange?: boolean
}

/**
 * A seeded source of operations over a tree's current entries plus fresh names. Names that once
 * existed (and `known`, e.g. every path in the lower layers) are reused as "fresh" names so that
 * creations land on whiteouts and over names hidden by opaque directories.
 */
export class OpGenerator {
  private readonly rnd: () => number
  private readonly known = new Set<string>()
  private counter = 0
  private readonly weights: Array<[OpKind, number]>
  private readonly total: number

  constructor (seed: number, known: Iterable<string> = [], opts: GeneratorOptions = {}) {
    this.rnd = prng(seed)
    for (const k of known) this.known.add(k)
    this.weights = opts.exchange === true ? [...WEIGHTS, ...OPTIONAL_WEIGHTS] : WEIGHTS
    this.total = this.weights.reduce((s, [, w]) => s + w, 0)
  }

  private pick<T> (xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)]!
  }

  private chance (p: number): boolean {
    return this.rnd() < p
  }

  private time (): Timespec {
    return [1_500_000_000 + Math.floor(this.rnd() * 2e8), Math.floor(this.rnd() * 1e9)]
  }

  /** An existing entry, preferring `types` most of the time; any entry (or a missing one) otherwise. */
  private existing (view: ViewEntry[], types: Array<ViewEntry['type']>): string {
    const wanted = view.filter((e) => types.includes(e.type))
    if (wanted.length > 0 && this.chance(0.9)) return this.pick(wanted).path
    if (view.length > 0 && this.chance(0.8)) return this.pick(view).path
    return this.fresh(view)
  }

  /** A name that does not exist now: a vanished or hidden one, or a new one under an existing dir. */
  private fresh (view: ViewEntry[]): string {
    const present = new Set(view.map((e) => e.path))
    const dirs = ['', ...view.filter((e) => e.type === 'dir').map((e) => e.path)]
    if (this.chance(0.45)) {
      const gone = [...this.known].filter((k) => !present.has(k) && (present.has(parentOf(k)) || parentOf(k) === '')).sort()
      if (gone.length > 0) return this.pick(gone)
    }
    const dir = this.pick(dirs)
    const name = this.chance(0.5) ? this.pick(FRESH) : `${this.pick(FRESH)}${++this.counter}`
    return dir === '' ? name : `${dir}/${name}`
  }

  /** Mostly a fresh name, sometimes an existing entry (to provoke EEXIST and replacements). */
  private target (view: ViewEntry[], types: Array<ViewEntry['type']>): string {
    return this.chance(0.7) ? this.fresh(view) : this.existing(view, types)
  }

  next (view: ViewEntry[]): Op {
    for (const e of view) this.known.add(e.path)
    let r = this.rnd() * this.total
    let kind: OpKind = 'create'
    for (const [k, w] of this.weights) {
      if (r < w) { kind = k; break }
      r -= w
    }
    const data = Math.floor(this.rnd() * 1_000_000)
    const files: Array<ViewEntry['type']> = ['file']
    switch (kind) {
      case 'create':
        return { kind, path: this.target(view, files), data, exclusive: this.chance(0.3), mode: this.pick([0o644, 0o600, 0o755]) }
      case 'write':
        return { kind, path: this.existing(view, files), offset: this.pick([0, 0, 3, 4095, 9000, 100_000]), data }
      case 'append':
      case 'fsync':
        return { kind, path: this.existing(view, files), data }
      case 'unlinkOpen': {
        // Regular files only: a device or fifo is opened by the kernel without asking the FUSE
        // server, so the server cannot know to keep its name, and fstat on it answers ENOENT
        // (a documented deviation from kernel overlayfs).
        const regular = view.filter((e) => e.type === 'file')
        return { kind, path: regular.length > 0 ? this.pick(regular).path : this.fresh(view), data }
      }
      case 'truncate':
      case 'ftruncate':
        return { kind, path: this.existing(view, files), len: this.pick([0, 1, 100, 4096, 10_000, 300_000]) }
      case 'chmod':
        return { kind, path: this.existing(view, ['file', 'dir']), mode: this.pick(MODES) }
      case 'chown':
        return { kind, path: this.existing(view, ['file', 'dir', 'symlink', 'other']), uid: this.pick([0, 1000, 65534]), gid: this.pick([0, 100, 65534]) }
      case 'utimens':
        return { kind, path: this.existing(view, ['file', 'dir', 'symlink', 'other']), atime: this.time(), mtime: this.time() }
      case 'setxattr':
        return { kind, path: this.existing(view, ['file', 'dir']), name: this.pick(XATTR_NAMES), value: `v${data % 97}`, create: this.chance(0.2) }
      case 'removexattr':
        return { kind, path: this.existing(view, ['file', 'dir']), name: this.pick(XATTR_NAMES) }
      case 'mkdir':
        return { kind, path: this.target(view, ['dir']), mode: this.pick(DIR_MODES) }
      case 'mknod':
        return { kind, path: this.target(view, ['other']), node: this.chance(0.7) ? 'fifo' : 'char' }
      case 'symlink':
        return { kind, path: this.target(view, ['symlink']), target: this.pick(SYMLINK_TARGETS) }
      case 'link':
        return { kind, path: this.existing(view, ['file', 'symlink', 'other']), to: this.target(view, files) }
      case 'unlink':
        return { kind, path: this.existing(view, ['file', 'symlink', 'other']) }
      case 'rmdir':
        return { kind, path: this.existing(view, ['dir']) }
      case 'rename': {
        const dir = this.chance(0.35)
        const from = this.existing(view, dir ? ['dir'] : ['file', 'symlink', 'other'])
        return { kind, path: from, to: this.target(view, dir ? ['dir'] : ['file', 'symlink', 'other']) }
      }
      case 'exchange':
        // Mostly two existing names of any types; sometimes a missing one.
        return { kind, path: this.existing(view, ['file', 'dir', 'symlink', 'other']), to: this.existing(view, ['file', 'dir', 'symlink', 'other']) }
      case 'statfs':
        return { kind, path: this.existing(view, ['dir', 'file']) }
      case 'read':
        return { kind, path: this.existing(view, files) }
      case 'readdir':
        return { kind, path: this.existing(view, ['dir']) }
    }
  }
}

export function describeOp (op: Op): string {
  const { kind, ...rest } = op
  return `${kind} ${JSON.stringify(rest, (key, v: unknown) => key === 'mode' && typeof v === 'number' ? `0${v.toString(8)}` : v)}`
}
