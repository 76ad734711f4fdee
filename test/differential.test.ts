import t from 'tap'
import { spawnSync } from 'node:child_process'
import { appendFileSync, lstatSync, statSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { lgetxattr } from '../src/sys/index.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { buildLayer, type LayerSpec } from './lib/layer-builder.js'
import { applyOp, describeOp, mtimeEffect, OpGenerator, walkView, type Op } from './lib/ops.js'
import { mountStratafs, unmountFuse } from './lib/overlay-mount.js'
import { diffTrees, snapshot, type Tree } from './lib/tree.js'

/**
 * Issue 3: the same random operations applied through kernel overlayfs and through stratafs, each
 * over its own copy of the same layers and upper. Every result (success or errno) must agree, the
 * merged trees must agree after every batch, and at the end so must the two upper directories,
 * whiteouts and the kernel's markers included. Then each upper is mounted by the other implementation.
 *
 * Replay one seed: STRATAFS_SEED=<n> [STRATAFS_DIFF_EXCHANGE=1] npx tap test/differential.test.ts
 * (STRATAFS_DIFF_OPS, STRATAFS_DIFF_SKIP and STRATAFS_DIFF_LOG are described below.)
 */

const OPS = Number(process.env.STRATAFS_DIFF_OPS ?? 2000)
/** A file to receive the whole operation log of each seed (appended). */
const LOG_FILE = process.env.STRATAFS_DIFF_LOG
/** Operation kinds generated but not applied (STRATAFS_DIFF_SKIP=unlinkOpen,link): to look past a known failure. */
const SKIP = new Set((process.env.STRATAFS_DIFF_SKIP ?? '').split(',').filter(Boolean))
const BATCH = 100
const TAIL = 25

const x = (s: string): Record<string, string> => ({ 'user.k0': s })

/** Bottom first. Kernel-form markers: the upper must be readable by kernel overlayfs too. */
const LAYERS: LayerSpec[] = [
  [
    { type: 'file', path: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644 },
    { type: 'file', path: 'etc/group', content: 'root:x:0:\n' },
    { type: 'file', path: 'etc/hosts', content: '127.0.0.1 localhost\n', xattrs: x('l0') },
    { type: 'file', path: 'etc/shadow', content: 'root:*:1::::::\n', mode: 0o600 },
    { type: 'file', path: 'usr/bin/tool', content: Buffer.alloc(30_000, 'tool'), mode: 0o755 },
    { type: 'file', path: 'usr/bin/su', content: 'su', mode: 0o4755 },
    { type: 'file', path: 'usr/lib/libx.so', content: Buffer.alloc(9000, 'x') },
    { type: 'symlink', path: 'usr/lib/liby.so', target: 'libx.so' },
    { type: 'file', path: 'usr/share/doc/a.txt', content: 'a0' },
    { type: 'file', path: 'usr/share/doc/b.txt', content: 'b0' },
    { type: 'file', path: 'usr/share/doc/deep/x/y/z.txt', content: 'z' },
    { type: 'file', path: 'data/hard1', content: 'shared inode' },
    { type: 'hardlink', path: 'data/hard2', target: 'data/hard1' },
    { type: 'file', path: 'data/sparse', content: Buffer.concat([Buffer.alloc(70_000), Buffer.from('end')]) },
    { type: 'fifo', path: 'run/fifo', mode: 0o640 },
    { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'dir', path: 'home/user', mode: 0o750, uid: 1000, gid: 1000 },
    { type: 'file', path: 'home/user/.profile', content: 'export A=1\n', uid: 1000, gid: 1000 },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'file', path: 'gone/f', content: 'hidden by a whiteout above' },
    { type: 'file', path: 'gone/g', content: 'hidden too' },
    { type: 'file', path: 'opq/f', content: 'hidden by an opaque dir above' },
    { type: 'file', path: 'opq/g', content: 'hidden too' },
    { type: 'dir', path: 'mix', mode: 0o755 },
    { type: 'file', path: 'mix/child', content: 'under a dir a file replaces' },
    { type: 'file', path: 'mix2', content: 'a file a dir replaces' },
    { type: 'file', path: 'a/f', content: 'a/f' },
    { type: 'symlink', path: 'a/x.txt', target: 'f' }
  ],
  [
    { type: 'file', path: 'etc/hosts', content: '127.0.0.1 localhost\n::1 localhost\n', xattrs: x('l1') },
    { type: 'whiteout', path: 'etc/group', form: 'kernel' },
    { type: 'whiteout', path: 'gone', form: 'kernel' },
    { type: 'dir', path: 'opq', opaque: 'kernel', mode: 0o755 },
    { type: 'file', path: 'opq/c', content: 'only c shows' },
    { type: 'file', path: 'usr/share/doc/c.txt', content: 'c1' },
    { type: 'whiteout', path: 'usr/lib/liby.so', form: 'kernel' },
    { type: 'file', path: 'mix', content: 'a file over a dir' },
    { type: 'dir', path: 'mix2', mode: 0o700 },
    { type: 'file', path: 'mix2/inside', content: 'i' },
    { type: 'file', path: 'a/sub/f', content: 'a/sub/f' },
    { type: 'file', path: 'single/f', content: 'a dir in one layer only' }
  ],
  [
    { type: 'file', path: 'usr/share/doc/a.txt', content: 'a2', mtime: [1_650_000_000, 5] },
    { type: 'file', path: 'var/log/app.log', content: Buffer.alloc(5000, 'log ') },
    { type: 'symlink', path: 'a/n1', target: 'sub/f' },
    { type: 'file', path: 'a/sub/g', content: 'g', xattrs: { 'user.a': 'top' } },
    { type: 'dir', path: 'usr', mode: 0o755, xattrs: x('l2') }
  ]
]

/** The pre-existing upper: a copied-up file, whiteouts, an opaque dir, an upper-only tree. */
const UPPER: LayerSpec = [
  { type: 'file', path: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' },
  { type: 'whiteout', path: 'usr/share/doc/b.txt', form: 'kernel' },
  { type: 'whiteout', path: 'data/hard2', form: 'kernel' },
  { type: 'dir', path: 'a/sub', opaque: 'kernel', mode: 0o755 },
  { type: 'file', path: 'a/sub/only', content: 'upper' },
  { type: 'file', path: 'work/notes', content: 'upper only' },
  { type: 'dir', path: 'work/d/e', mode: 0o755 },
  { type: 'file', path: 'work/d/e/f', content: 'deep upper only' }
]

interface Fixture { lowers: string[]; upper: string; work: string }

/** Lowers top first, as mount options want them, shared by both sides; upper and work per side. */
function buildFixture (base: string, side: string, lowers: string[]): Fixture {
  const upper = join(base, side, 'upper')
  const work = join(base, side, 'work')
  buildLayer(upper, UPPER)
  mkdirSync(work, { recursive: true })
  return { lowers, upper, work }
}

function lowerPaths (dir: string, rel = ''): string[] {
  const out: string[] = []
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const path = rel === '' ? name : `${rel}/${name}`
    out.push(path)
    if (lstatSync(join(dir, path)).isDirectory()) out.push(...lowerPaths(dir, path))
  }
  return out
}

/**
 * Writes follow a final symlink, so the inode they change is the one stat finds; utimens here does
 * not follow, so the inode it sets is the one lstat finds.
 */
function inoOf (path: string, follow: boolean): bigint | undefined {
  try {
    return (follow ? statSync : lstatSync)(path, { bigint: true }).ino
  } catch {
    return follow ? inoOf(path, false) : undefined
  }
}

/** Tracks which mtimes the operations set to "now", which the comparisons must then leave out. */
class MtimeMask {
  private readonly inos = new Set<bigint>()
  private readonly paths = new Set<string>()
  private readonly subtrees = new Set<string>()

  private readonly before = new Set<bigint>()

  /** Before the operation: the inodes whose data it writes, which a removal may unname. */
  prepare (op: Op, kernelRoot: string): void {
    this.before.clear()
    for (const p of mtimeEffect(op).contentOf) {
      const ino = inoOf(join(kernelRoot, p), true)
      if (ino !== undefined) this.before.add(ino)
    }
  }

  record (op: Op, ok: boolean, kernelRoot: string): void {
    const effect = mtimeEffect(op)
    for (const ino of this.before) this.inos.add(ino)
    for (const p of effect.names) this.paths.add(p)
    for (const p of effect.subtrees) this.subtrees.add(p)
    for (const p of effect.contentOf) {
      const ino = inoOf(join(kernelRoot, p), true)
      if (ino !== undefined) this.inos.add(ino)
    }
    for (const p of effect.made) {
      const ino = inoOf(join(kernelRoot, p), false)
      if (ino !== undefined) this.inos.add(ino)
    }
    if (!ok) return
    for (const p of effect.set) {
      this.paths.delete(p)
      const ino = inoOf(join(kernelRoot, p), false)
      if (ino !== undefined) this.inos.delete(ino)
    }
  }

  /** Whether the mtime at `path` (tree-relative, '/'-rooted) is one nobody chose. */
  masked (path: string, kernelIno: bigint | undefined): boolean {
    const rel = path === '/' ? '' : path.slice(1)
    if (this.paths.has(rel)) return true
    if (kernelIno !== undefined && this.inos.has(kernelIno)) return true
    for (const s of this.subtrees) if (rel === s || rel.startsWith(s + '/')) return true
    return false
  }
}

/** Copies of both trees with the masked mtimes zeroed, so diffTrees compares the rest. */
function maskTimes (a: Tree, b: Tree, mask: MtimeMask, kernelTree: Tree): [Tree, Tree] {
  const strip = (tree: Tree): Tree => new Map([...tree].map(([p, n]) =>
    [p, mask.masked(p, kernelTree.get(p)?.ino) ? { ...n, mtimeNs: 0n } : n]))
  return [strip(a), strip(b)]
}

/**
 * The kernel makes whiteouts as hard links to one shared whiteout inode, so their link counts and
 * groups say how the whiteouts were made, not what they mean.
 */
function forgetWhiteoutLinks (tree: Tree): Tree {
  return new Map([...tree].map(([p, n]) => {
    if (n.type !== 'char' || n.rdev !== '0:0') return [p, n]
    const copy = { ...n }
    delete copy.nlink
    delete copy.linkGroup
    return [p, copy]
  }))
}

/**
 * The kernel's markers that snapshot() leaves out: opaque directories, metadata-only copies and
 * their redirects, one line each. (Origins and impure marks are the kernel's alone.)
 */
function overlayMarks (upper: string, rel = '', dir = true): string[] {
  const out: string[] = []
  const abs = rel === '' ? upper : join(upper, rel)
  const shown = rel === '' ? '/' : `/${rel}`
  if (lgetxattr(abs, 'trusted.overlay.opaque')?.toString() === 'y') out.push(`${shown} opaque`)
  if (lgetxattr(abs, 'trusted.overlay.metacopy') !== undefined) out.push(`${shown} metacopy`)
  const redirect = lgetxattr(abs, 'trusted.overlay.redirect')
  if (redirect !== undefined) out.push(`${shown} redirect ${redirect.toString()}`)
  if (!dir) return out
  for (const e of readdirSync(abs, { withFileTypes: true })) {
    if (e.isDirectory() || e.isFile()) out.push(...overlayMarks(upper, rel === '' ? e.name : `${rel}/${e.name}`, e.isDirectory()))
  }
  return out
}

/** A rename or an exchange with a directory on either side, as the kernel's mount shows them. */
function movesDirectory (root: string, op: Op): boolean {
  if (op.kind !== 'rename' && op.kind !== 'exchange') return false
  const isDir = (path: string): boolean => {
    try {
      return lstatSync(join(root, path)).isDirectory()
    } catch {
      return false
    }
  }
  return isDir(op.path) || (op.kind === 'exchange' && isDir(op.to))
}

function freshDir (dir: string): string {
  mkdirSync(dir, { recursive: true })
  return dir
}

function umount (mnt: string): number | null {
  return spawnSync('umount', [mnt], { stdio: 'ignore' }).status
}

/**
 * Seeds found by a random run to show a bug, kept so the bug stays fixed:
 * 1892886566, a file renamed out of a setgid directory onto a whiteout (the kernel moves that
 * whiteout, with its owner, to the source's place instead of making a new one);
 * 426981070, removexattr of a name a lower file does not have (the kernel answers ENODATA and
 * copies nothing up; a copy-up showed a hard-linked file with nlink 1).
 * With exchanges, 1951272343: renames of a directory refused as ENOTEMPTY (the kernel had marked
 * the directory opaque, and leaves the marker).
 */
const FOUND = [1892886566, 426981070]
const FOUND_WITH_EXCHANGES = [1951272343]

interface Run {
  seed: number
  /** Also RENAME_EXCHANGE: seeds recorded before it existed run without it, as they were found. */
  exchange: boolean
  /**
   * Both mounted with metacopy=on, as the daemon mounts containers. The kernel then also turns
   * redirect_dir on and renames directories that stratafs refuses with EXDEV, as it does without
   * (mv then copies): those are asked of stratafs first, and the kernel is left out when it refuses.
   */
  metacopy: boolean
}

/**
 * STRATAFS_SEED alone when given (a replay; STRATAFS_DIFF_EXCHANGE=1 for a run with exchanges,
 * STRATAFS_DIFF_METACOPY=1 for one with metacopy=on), else fixed seeds plus two new per run.
 */
function runs (): Run[] {
  const env = process.env.STRATAFS_SEED
  if (env !== undefined && env !== '') {
    return [{ seed: Number(env), exchange: process.env.STRATAFS_DIFF_EXCHANGE === '1', metacopy: process.env.STRATAFS_DIFF_METACOPY === '1' }]
  }
  const fresh = (): number => Math.floor(Math.random() * 2 ** 31)
  return [
    ...[1, 2, 3, ...FOUND].map((seed) => ({ seed, exchange: false, metacopy: false })),
    ...[4, ...FOUND_WITH_EXCHANGES, fresh()].map((seed) => ({ seed, exchange: true, metacopy: false })),
    ...[5, fresh()].map((seed) => ({ seed, exchange: true, metacopy: true }))
  ]
}

const labels: [string, string] = ['kernel', 'stratafs']

for (const { seed, exchange, metacopy } of runs()) {
  const replay = `STRATAFS_SEED=${seed}${exchange ? ' STRATAFS_DIFF_EXCHANGE=1' : ''}${metacopy ? ' STRATAFS_DIFF_METACOPY=1' : ''}`
  const options = metacopy ? ['metacopy=on'] : []
  t.test(`seed ${seed}${exchange ? ', with exchanges' : ''}${metacopy ? ', metacopy=on' : ''}`, async (t) => {
    t.comment(`replay: ${replay} npx tap test/differential.test.ts`)
    const base = mkdtempSync(join(tmpdir(), 'sdiff-'))
    t.teardown(() => rmSync(base, { recursive: true, force: true }))
    const lowers = LAYERS.map((spec, i) => {
      const dir = join(base, `l${i}`)
      buildLayer(dir, spec)
      return dir
    }).reverse()
    const kside = buildFixture(base, 'kernel', lowers)
    const sside = buildFixture(base, 'stratafs', lowers)
    const kmnt = mountKernelOverlay(t, { lowerDirs: kside.lowers, upperDir: kside.upper, workDir: kside.work, options })
    const smnt = mountStratafs(t, { lowerDirs: sside.lowers, upperDir: sside.upper, workDir: sside.work, options })

    const initial = diffTrees(snapshot(kmnt), snapshot(smnt), { names: labels, ignoreGhosts: 'a' })
    t.same(initial, [], 'the two mounts start out equal')

    const gen = new OpGenerator(seed, [...new Set(lowers.flatMap((l) => lowerPaths(l)))], { exchange })
    const mask = new MtimeMask()
    const log: string[] = []
    const tail = (): string => log.slice(-TAIL).join('\n')
    const history = (paths: string[]): string => log.filter((l) => paths.some((p) => l.includes(`"${p}`))).slice(-TAIL).join('\n')
    let failed = false
    let kernelFinal: Tree | undefined
    let stratafsFinal: Tree | undefined

    for (let i = 0; i < OPS && !failed; i++) {
      const op = gen.next(walkView(kmnt))
      if (SKIP.has(op.kind)) continue
      mask.prepare(op, kmnt)
      let kres: string
      let sres: string
      if (metacopy && movesDirectory(kmnt, op)) {
        sres = applyOp(smnt, op)
        kres = sres === 'EXDEV' ? sres : applyOp(kmnt, op)
      } else {
        kres = applyOp(kmnt, op)
        sres = applyOp(smnt, op)
      }
      log.push(`#${i} ${describeOp(op)} → ${kres}${sres === kres ? '' : ` | stratafs: ${sres}`}`)
      mask.record(op, kres.startsWith('ok') && sres.startsWith('ok'), kmnt)
      if (kres !== sres) {
        failed = true
        t.fail(`seed ${seed} op #${i}: ${describeOp(op)}: kernel ${kres}, stratafs ${sres}`, {
          diagnostic: true, seed, op: i, replay, tail: tail(), samePaths: history([op.path])
        })
        break
      }
      if ((i + 1) % BATCH === 0 || i === OPS - 1) {
        const k = snapshot(kmnt)
        const s = snapshot(smnt)
        kernelFinal = k
        stratafsFinal = s
        const [km, sm] = maskTimes(k, s, mask, k)
        const diff = diffTrees(km, sm, { names: labels, ignoreGhosts: 'a' })
        if (diff.length > 0) {
          failed = true
          const paths = diff.slice(0, 5).map((d) => d.slice(1, d.indexOf(':')))
          t.fail(`seed ${seed}: merged trees differ after op #${i}`, {
            diagnostic: true, seed, op: i, replay, diff: diff.slice(0, 40).join('\n'),
            samePaths: history(paths), tail: tail()
          })
        }
        // The markers too, while the files they mark exist: most metadata-only copies get their data later.
        const kmarks = overlayMarks(kside.upper)
        const smarks = overlayMarks(sside.upper)
        const marks = [...kmarks.filter(m => !smarks.includes(m)).map(m => `kernel only: ${m}`), ...smarks.filter(m => !kmarks.includes(m)).map(m => `stratafs only: ${m}`)]
        if (!failed && marks.length > 0) {
          failed = true
          const paths = marks.slice(0, 5).map((m) => m.split(' ')[2]!.slice(1))
          t.fail(`seed ${seed}: the uppers' markers differ after op #${i}`, {
            diagnostic: true, seed, op: i, replay, marks: marks.join('\n'), samePaths: history(paths), tail: tail()
          })
        }
      }
    }
    if (!failed) t.pass(`seed ${seed}: ${OPS} operations agree`)
    if (LOG_FILE !== undefined) appendFileSync(LOG_FILE, `# seed ${seed}\n${log.join('\n')}\n`)
    kernelFinal ??= snapshot(kmnt)
    stratafsFinal ??= snapshot(smnt)

    const unmountSaid = unmountFuse(smnt)
    t.equal(unmountSaid, undefined, 'stratafs unmounts cleanly')
    const kumount = umount(kmnt)
    t.equal(kumount, 0, 'kernel overlay unmounts')

    const ku = forgetWhiteoutLinks(snapshot(kside.upper))
    const su = forgetWhiteoutLinks(snapshot(sside.upper))
    const [kum, sum] = maskTimes(ku, su, mask, kernelFinal)
    t.same(diffTrees(kum, sum, { names: ['kernel upper', 'stratafs upper'], root: false }), [],
      `seed ${seed}: the upper directories agree (whiteouts, modes, owners, contents, xattrs)`)
    t.same(overlayMarks(sside.upper), overlayMarks(kside.upper), `seed ${seed}: the same opaque directories, metadata-only copies and redirects in both uppers`)

    // Each implementation reads the other's upper.
    const kOnS = mountKernelOverlay(t, { lowerDirs: lowers, upperDir: sside.upper, workDir: freshDir(join(base, 'w-k-on-s')), options })
    t.same(diffTrees(stratafsFinal, snapshot(kOnS), { names: ['stratafs', 'kernel on stratafs upper'], ignoreGhosts: 'b' }), [],
      `seed ${seed}: kernel overlayfs on the stratafs upper shows what stratafs showed`)
    const sOnK = mountStratafs(t, { lowerDirs: lowers, upperDir: kside.upper, workDir: freshDir(join(base, 'w-s-on-k')), options })
    t.same(diffTrees(kernelFinal, snapshot(sOnK), { names: ['kernel', 'stratafs on kernel upper'], ignoreGhosts: 'a' }), [],
      `seed ${seed}: stratafs on the kernel upper shows what the kernel showed`)
    unmountFuse(sOnK)
    umount(kOnS)
  })
}
