import t from 'tap'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { buildStack, kernelForm, randomStack, DEFAULT_MTIME, type LayerEntrySpec, type LayerSpec, type Timespec } from './lib/layer-builder.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { diffTrees, snapshot, type Tree, type TreeNode } from './lib/tree.js'

/**
 * The harness checks itself: an independent model of overlay lookup (design.md §2, 1–3) computed
 * from the layer specs must agree with kernel overlayfs mounted on the built layers. If this fails
 * the fixtures, the snapshot or the oracle mount is wrong, and the read-path tests mean nothing.
 */

type Slot =
  | { kind: 'whiteout' }
  | { kind: 'dir'; spec?: LayerEntrySpec & { type: 'dir' } }
  | { kind: 'other'; spec: Exclude<LayerEntrySpec, { type: 'whiteout' | 'hardlink' | 'dir' }>; group: string }

function indexLayer (spec: LayerSpec, layer: number): Map<string, Slot> {
  const slots = new Map<string, Slot>([['', { kind: 'dir' }]])
  const byPath = new Map<string, LayerEntrySpec>()
  for (const e of spec) {
    const parts = e.path.split('/')
    for (let i = 1; i < parts.length; i++) {
      const sub = parts.slice(0, i).join('/')
      if (!slots.has(sub)) slots.set(sub, { kind: 'dir' })
    }
    byPath.set(e.path, e)
    if (e.type === 'whiteout') slots.set(e.path, { kind: 'whiteout' })
    else if (e.type === 'dir') slots.set(e.path, { kind: 'dir', spec: e })
    else if (e.type === 'hardlink') {
      const target = byPath.get(e.target) as Exclude<LayerEntrySpec, { type: 'whiteout' | 'hardlink' | 'dir' }>
      slots.set(e.path, { kind: 'other', spec: target, group: `${layer}:${e.target}` })
    } else slots.set(e.path, { kind: 'other', spec: e, group: `${layer}:${e.path}` })
  }
  return slots
}

const ns = (t: Timespec): bigint => BigInt(t[0]) * 1_000_000_000n + BigInt(t[1])
const hex = (v: string | Buffer): string => (typeof v === 'string' ? Buffer.from(v) : v).toString('hex')

function nodeOf (slot: Slot): TreeNode {
  if (slot.kind === 'dir') {
    const s = slot.spec
    return {
      type: 'dir', mode: s?.mode ?? 0o755, uid: s?.uid ?? 0, gid: s?.gid ?? 0, mtimeNs: ns(s?.mtime ?? DEFAULT_MTIME),
      xattrs: Object.fromEntries(Object.entries(s?.xattrs ?? {}).map(([k, v]) => [k, hex(v)])), ino: 0n
    }
  }
  if (slot.kind === 'whiteout') throw new Error('a whiteout has no node')
  const s = slot.spec
  const node: TreeNode = {
    type: s.type, mode: s.type === 'symlink' ? 0o777 : s.mode ?? 0o644, uid: s.uid ?? 0, gid: s.gid ?? 0,
    mtimeNs: ns(s.mtime ?? DEFAULT_MTIME), xattrs: Object.fromEntries(Object.entries(s.xattrs ?? {}).map(([k, v]) => [k, hex(v)])), ino: 0n
  }
  if (s.type === 'file') {
    const content = typeof s.content === 'string' ? Buffer.from(s.content) : s.content ?? Buffer.alloc(0)
    node.size = content.length
    node.sha256 = createHash('sha256').update(content).digest('hex')
  }
  if (s.type === 'symlink') { node.target = s.target; node.size = Buffer.byteLength(s.target) }
  if (s.type === 'char' || s.type === 'block') node.rdev = `${s.major}:${s.minor}`
  return node
}

/** The merged view of `layers` (bottom first) as overlayfs defines it. */
export function expectedTree (layers: LayerSpec[]): Tree {
  const idx = layers.map(indexLayer).reverse()
  const tree: Tree = new Map()
  const groups = new Map<string, string[]>()
  const walk = (dir: string, contributing: number[]): void => {
    const names = new Set<string>()
    for (const li of contributing) {
      for (const p of idx[li]!.keys()) {
        if (p === '') continue
        const slash = p.lastIndexOf('/')
        if ((slash < 0 ? '' : p.slice(0, slash)) === dir) names.add(slash < 0 ? p : p.slice(slash + 1))
      }
    }
    for (const name of [...names].sort()) {
      const path = dir === '' ? name : `${dir}/${name}`
      let top: Slot | undefined
      const dirLayers: number[] = []
      for (const li of contributing) {
        const slot = idx[li]!.get(path)
        if (slot === undefined) continue
        if (slot.kind === 'whiteout') break
        if (slot.kind === 'other') { top ??= slot; break }
        top ??= slot
        dirLayers.push(li)
        if (slot.spec?.opaque !== undefined) break
      }
      if (top === undefined) continue
      tree.set('/' + path, nodeOf(top))
      if (top.kind === 'other') groups.set(top.group, [...(groups.get(top.group) ?? []), '/' + path])
      if (top.kind === 'dir') walk(path, dirLayers)
    }
  }
  tree.set('/', nodeOf(idx[0]!.get('')!))
  walk('', idx.map((_, i) => i))
  for (const g of groups.values()) {
    if (g.length < 2) continue
    g.sort()
    for (const p of g) tree.get(p)!.linkGroup = g
  }
  return tree
}

for (const [depth, seed] of [[1, 11], [3, 22], [3, 23], [128, 33]] as const) {
  t.test(`kernel overlayfs over a ${depth}-layer random stack equals the model (seed ${seed})`, async (t) => {
    const base = t.testdir()
    const specs = randomStack(seed, depth)
    const dirs = buildStack(join(base, 'oci'), specs)
    const kdirs = dirs.map((d, i) => kernelForm(d, join(base, 'kernel', `l${i}`)))
    const mnt = mountKernelOverlay(t, { lowerDirs: [...kdirs].reverse() })
    const diff = diffTrees(expectedTree(specs), snapshot(mnt), { names: ['model', 'kernel'], nlink: false, ignoreGhosts: 'b' })
    t.same(diff, [], 'no differences')
  })
}

t.test('the same stack built twice snapshots identically, inode numbers aside', async (t) => {
  const base = t.testdir()
  const specs = randomStack(5, 3)
  const a = buildStack(join(base, 'a'), specs)
  const b = buildStack(join(base, 'b'), specs)
  for (let i = 0; i < a.length; i++) t.same(diffTrees(snapshot(a[i]!), snapshot(b[i]!)), [], `layer ${i}`)
})
