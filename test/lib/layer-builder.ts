import { spawnSync } from 'node:child_process'
import {
  chmodSync, lchownSync, linkSync, mkdirSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync, lstatSync
} from 'node:fs'
import { dirname, join } from 'node:path'
import koffi from 'koffi'

/**
 * Declarative layer fixtures written to real directories. Node's fs cannot mknod, set xattrs or
 * set nanosecond times, so those go through libc directly rather than a process per file: a
 * 128-layer stack has thousands of entries.
 */

export type Timespec = [sec: number, nsec: number]
export type MarkerForm = 'kernel' | 'oci'

interface Common {
  /** Relative to the layer root, no leading slash: 'etc/passwd'. */
  path: string
  mode?: number
  uid?: number
  gid?: number
  mtime?: Timespec
  /** name → value; values as strings or raw bytes. */
  xattrs?: Record<string, string | Buffer>
}

export type LayerEntrySpec =
  | (Common & { type: 'file'; content?: string | Buffer })
  | (Common & { type: 'dir'; opaque?: MarkerForm })
  | (Common & { type: 'symlink'; target: string })
  | { type: 'hardlink'; path: string; target: string }
  | (Common & { type: 'char' | 'block'; major: number; minor: number })
  | (Common & { type: 'fifo' })
  | { type: 'whiteout'; path: string; form: MarkerForm }

export type LayerSpec = LayerEntrySpec[]

export const OCI_WHITEOUT_PREFIX = '.wh.'
export const OCI_OPAQUE = '.wh..wh..opq'
export const OPAQUE_XATTR = 'trusted.overlay.opaque'

/** Entries whose times a test did not choose get this one, so trees built twice are identical. */
export const DEFAULT_MTIME: Timespec = [1_700_000_000, 123_456_789]

const S_IFCHR = 0o020000
const S_IFBLK = 0o060000
const S_IFIFO = 0o010000
const AT_FDCWD = -100
const AT_SYMLINK_NOFOLLOW = 0x100

const libc = koffi.load('libc.so.6')
const cMknod = libc.func('int mknod(const char *path, uint32_t mode, uint64_t dev)')
const cLsetxattr = libc.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)')
koffi.struct('strata_test_timespec', { tv_sec: 'int64', tv_nsec: 'int64' })
const cUtimensat = libc.func('int utimensat(int dirfd, const char *path, strata_test_timespec *times, int flags)')

function check (rc: number, what: string, path: string): void {
  if (rc !== 0) throw new Error(`${what} ${path}: errno ${koffi.errno()}`)
}

export function makedev (major: number, minor: number): bigint {
  const ma = BigInt(major)
  const mi = BigInt(minor)
  return ((ma & 0xfffn) << 8n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n) | ((ma & ~0xfffn) << 32n)
}

export function mknod (path: string, mode: number, dev: bigint = 0n): void {
  check(cMknod(path, mode, dev), 'mknod', path)
}

export function lsetxattr (path: string, name: string, value: string | Buffer): void {
  const buf = typeof value === 'string' ? Buffer.from(value) : value
  check(cLsetxattr(path, name, buf, buf.length, 0), 'lsetxattr', path)
}

/** Sets atime and mtime to `time` with nanoseconds, not following a final symlink. */
export function setTimes (path: string, time: Timespec): void {
  const ts = { tv_sec: time[0], tv_nsec: time[1] }
  check(cUtimensat(AT_FDCWD, path, [ts, ts], AT_SYMLINK_NOFOLLOW), 'utimensat', path)
}

function mkdirs (root: string, rel: string, made: Set<string>): void {
  const parts = rel.split('/').filter(Boolean)
  for (let i = 1; i <= parts.length; i++) {
    const sub = parts.slice(0, i).join('/')
    const abs = join(root, sub)
    try {
      mkdirSync(abs)
      // A setgid parent would hand down its bit and group.
      lchownSync(abs, 0, 0)
      chmodSync(abs, 0o755)
      made.add(sub)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
}

/**
 * Writes `spec` into `dir` (created if missing). Parents not listed are made 0755 root:root.
 * Every entry and directory gets an explicit mtime (DEFAULT_MTIME unless given), set after all
 * children exist so that adding them does not disturb it. Owner before mode: chown clears setuid.
 */
export function buildLayer (dir: string, spec: LayerSpec): void {
  mkdirSync(dir, { recursive: true })
  lchownSync(dir, 0, 0)
  chmodSync(dir, 0o755)
  const dirs = new Map<string, Timespec>([['', DEFAULT_MTIME]])
  const implicit = new Set<string>()
  const nonDirTimes: Array<[string, Timespec]> = []
  for (const e of spec) {
    const abs = join(dir, e.path)
    mkdirs(dir, dirname(e.path) === '.' ? '' : dirname(e.path), implicit)
    switch (e.type) {
      case 'whiteout':
        if (e.form === 'kernel') {
          mknod(abs, S_IFCHR | 0o000, 0n)
          nonDirTimes.push([abs, DEFAULT_MTIME])
        } else {
          const marker = join(dirname(abs), OCI_WHITEOUT_PREFIX + basename(e.path))
          writeFileSync(marker, '')
          nonDirTimes.push([marker, DEFAULT_MTIME])
        }
        continue
      case 'hardlink':
        linkSync(join(dir, e.target), abs)
        continue
      case 'dir':
        mkdirs(dir, e.path, implicit)
        if (e.opaque === 'kernel') lsetxattr(abs, OPAQUE_XATTR, 'y')
        if (e.opaque === 'oci') {
          writeFileSync(join(abs, OCI_OPAQUE), '')
          nonDirTimes.push([join(abs, OCI_OPAQUE), DEFAULT_MTIME])
        }
        break
      case 'file':
        writeFileSync(abs, e.content ?? '')
        break
      case 'symlink':
        symlinkSync(e.target, abs)
        break
      case 'char':
        mknod(abs, S_IFCHR | (e.mode ?? 0o644), makedev(e.major, e.minor))
        break
      case 'block':
        mknod(abs, S_IFBLK | (e.mode ?? 0o644), makedev(e.major, e.minor))
        break
      case 'fifo':
        mknod(abs, S_IFIFO | (e.mode ?? 0o644), 0n)
        break
    }
    lchownSync(abs, e.uid ?? 0, e.gid ?? 0)
    if (e.type !== 'symlink') chmodSync(abs, e.mode ?? (e.type === 'dir' ? 0o755 : 0o644))
    for (const [name, value] of Object.entries(e.xattrs ?? {})) lsetxattr(abs, name, value)
    if (e.type === 'dir') dirs.set(e.path.replace(/\/+$/, ''), e.mtime ?? DEFAULT_MTIME)
    else nonDirTimes.push([abs, e.mtime ?? DEFAULT_MTIME])
  }
  for (const sub of implicit) if (!dirs.has(sub)) dirs.set(sub, DEFAULT_MTIME)
  for (const [abs, time] of nonDirTimes) setTimes(abs, time)
  const deepestFirst = [...dirs].sort((a, b) => b[0].split('/').length - a[0].split('/').length)
  for (const [sub, time] of deepestFirst) setTimes(join(dir, sub), time)
}

function basename (p: string): string {
  return p.replace(/\/+$/, '').split('/').pop()!
}

/**
 * A copy of a layer dir with OCI markers turned into kernel ones (`.wh.x` → char 0/0 `x`,
 * `.wh..wh..opq` → trusted.overlay.opaque=y), for the kernel-overlayfs oracle, which ignores `.wh.`
 * files. Directory times are put back after the markers change them.
 */
export function kernelForm (src: string, dest: string): string {
  rmSync(dest, { recursive: true, force: true })
  mkdirSync(dirname(dest), { recursive: true })
  const cp = spawnSync('cp', ['-a', '--', src, dest], { encoding: 'utf8' })
  if (cp.status !== 0) throw new Error(`cp -a ${src}: ${cp.stderr}`)
  const walk = (d: string): void => {
    const st = lstatSync(d, { bigint: true })
    let changed = false
    for (const name of readdirSync(d)) {
      const abs = join(d, name)
      if (name === OCI_OPAQUE) {
        unlinkSync(abs)
        lsetxattr(d, OPAQUE_XATTR, 'y')
        changed = true
      } else if (name.startsWith(OCI_WHITEOUT_PREFIX)) {
        unlinkSync(abs)
        mknod(join(d, name.slice(OCI_WHITEOUT_PREFIX.length)), S_IFCHR, 0n)
        changed = true
      } else if (lstatSync(abs).isDirectory()) {
        walk(abs)
      }
    }
    if (changed) {
      setTimes(d, [Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n)])
    }
  }
  walk(dest)
  return dest
}

/** mulberry32: small, seedable, good enough to pick fixture shapes reproducibly. */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface RandomStackOptions {
  /** Entries tried per layer (some are skipped when they would conflict). Default 12. */
  entriesPerLayer?: number
  /** Use devices, fifos and foreign owners (needs root). Default true. */
  special?: boolean
}

/**
 * `depth` layer specs, bottom first, over a small name pool so that paths collide across layers:
 * replaced files, dirs over files and files over dirs, whiteouts and opaque dirs of both forms,
 * symlinks, hard links, xattrs, odd modes, nanosecond times.
 */
export function randomStack (seed: number, depth: number, opts: RandomStackOptions = {}): LayerSpec[] {
  const rnd = prng(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const dirNames = ['a', 'b', 'c', 'etc', 'usr']
  const fileNames = ['f', 'g', 'h', 'passwd', 'x.txt']
  const perLayer = opts.entriesPerLayer ?? 12
  const special = opts.special ?? true
  const layers: LayerSpec[] = []
  for (let l = 0; l < depth; l++) {
    // What this layer holds so far: path → 'dir' | 'other'. Parents of an entry must be dirs here.
    const kinds = new Map<string, 'dir' | 'other'>()
    const spec: LayerSpec = []
    const randomPath = (): string => {
      const depthHere = Math.floor(rnd() * 3)
      const parts: string[] = []
      for (let i = 0; i < depthHere; i++) parts.push(pick(dirNames))
      parts.push(rnd() < 0.5 ? pick(dirNames) : pick(fileNames))
      return parts.join('/')
    }
    const claim = (path: string, kind: 'dir' | 'other'): boolean => {
      if (kinds.has(path)) return false
      const parts = path.split('/')
      for (let i = 1; i < parts.length; i++) {
        const sub = parts.slice(0, i).join('/')
        if (kinds.get(sub) === 'other') return false
      }
      // A whiteout or file cannot sit where this layer already put children.
      if (kind === 'other' && [...kinds.keys()].some((k) => k.startsWith(path + '/'))) return false
      for (let i = 1; i < parts.length; i++) kinds.set(parts.slice(0, i).join('/'), 'dir')
      kinds.set(path, kind)
      return true
    }
    const time = (): Timespec => [1_600_000_000 + Math.floor(rnd() * 1e8), Math.floor(rnd() * 1e9)]
    const owner = (): { uid: number; gid: number } =>
      special && rnd() < 0.3 ? { uid: pick([1, 1000, 65534]), gid: pick([1, 100, 65534]) } : { uid: 0, gid: 0 }
    const xattrs = (): Record<string, string | Buffer> | undefined =>
      rnd() < 0.25 ? { [`user.k${Math.floor(rnd() * 3)}`]: rnd() < 0.5 ? `v${l}` : Buffer.from([0, l & 0xff, 0xff]) } : undefined
    const files: string[] = []
    for (let i = 0; i < perLayer; i++) {
      const path = randomPath()
      const r = rnd()
      if (l > 0 && r < 0.18) {
        if (claim(path, 'other')) spec.push({ type: 'whiteout', path, form: rnd() < 0.5 ? 'kernel' : 'oci' })
      } else if (r < 0.36) {
        const opaque = l > 0 && rnd() < 0.3 ? (rnd() < 0.5 ? 'kernel' : 'oci') as MarkerForm : undefined
        if (claim(path, 'dir')) {
          spec.push({ type: 'dir', path, mode: pick([0o755, 0o700, 0o1777, 0o2755]), ...owner(), mtime: time(), xattrs: xattrs(), opaque })
        }
      } else if (r < 0.66) {
        if (claim(path, 'other')) {
          const size = Math.floor(rnd() * 3) === 0 ? 0 : Math.floor(rnd() * 20000)
          const content = Buffer.alloc(size, `${seed}:${l}:${path}:`)
          spec.push({ type: 'file', path, content, mode: pick([0o644, 0o600, 0o755, 0o4755, 0o444]), ...owner(), mtime: time(), xattrs: xattrs() })
          files.push(path)
        }
      } else if (r < 0.78) {
        if (claim(path, 'other')) spec.push({ type: 'symlink', path, target: pick(['f', '../g', '/etc/passwd', 'a/b/c', 'missing']), mtime: time() })
      } else if (r < 0.88) {
        if (files.length > 0 && claim(path, 'other')) spec.push({ type: 'hardlink', path, target: pick(files) })
      } else if (special) {
        if (claim(path, 'other')) {
          const kind = pick(['char', 'block', 'fifo'] as const)
          spec.push(kind === 'fifo'
            ? { type: 'fifo', path, mode: 0o640, mtime: time() }
            : { type: kind, path, major: pick([1, 8, 259]), minor: pick([3, 5, 300]), mode: 0o660, mtime: time() })
        }
      }
    }
    layers.push(spec)
  }
  return layers
}

/** Builds a stack under `base/l0..l{n-1}` and returns the dirs, bottom first. */
export function buildStack (base: string, layers: LayerSpec[]): string[] {
  return layers.map((spec, i) => {
    const dir = join(base, `l${i}`)
    buildLayer(dir, spec)
    return dir
  })
}
