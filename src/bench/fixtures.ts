import { spawnSync } from 'node:child_process'
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { StrataError } from '../errors.js'
import { mknod, makedev } from '../sys/index.js'
import type { BenchPlan } from './plan.js'

/** A layer stack every implementation mounts, and the plain directory that stands in for it. */
export interface Stack {
  /** Where the layer directories live; mounts run with it as working directory. */
  root: string
  /** Layer directory names relative to `root`, bottom first. */
  layers: string[]
  /** The merged contents as one ordinary directory: the floor. */
  plain: string
}

export interface Fixtures {
  /** Copy-up, chmod, streams, churn and tree walks: a two-layer stack holding them all. */
  work: Stack
  copyUpFiles: Map<number, string[]>
  chmodFiles: string[]
  streamFile: string
  churnDir: string
  treeDir: string
  /** One stack per depth, each with the same path list to stat. */
  depthStacks: Map<number, Stack>
  statList: string
  /** A merged directory over several layers with whiteouts in kernel form. */
  readdir: Stack
  readdirDir: string
}

const WHITEOUT = 0o020000

/** Deterministic, so every implementation and every run sees the same layout and order. */
function prng (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function writeData (path: string, size: number, block: Buffer): void {
  const fd = openSync(path, 'w')
  try {
    for (let done = 0; done < size; done += block.length) writeSync(fd, block, 0, Math.min(block.length, size - done))
  } finally {
    closeSync(fd)
  }
}

function copyTree (from: string, to: string): void {
  const res = spawnSync('cp', ['-a', from, to], { encoding: 'utf8' })
  if (res.status !== 0) throw new StrataError('EIO', `cp -a ${from} ${to}: ${res.stderr.trim()}`)
}

function buildWork (dir: string, plan: BenchPlan, block: Buffer): Omit<Fixtures, 'depthStacks' | 'statList' | 'readdir' | 'readdirDir'> {
  const bottom = join(dir, 'l0')
  const top = join(dir, 'l1')
  mkdirSync(join(bottom, 'data'), { recursive: true })
  mkdirSync(join(bottom, 'meta'))
  mkdirSync(join(bottom, 'churn'))
  mkdirSync(join(top, 'data'), { recursive: true })
  writeFileSync(join(top, 'data', 'README'), 'a file in the upper lower layer\n')
  const copyUpFiles = new Map<number, string[]>()
  for (const { size, files } of plan.copyUp) {
    const names: string[] = []
    for (let i = 0; i < files; i++) {
      const name = `data/f${size}-${i}`
      writeData(join(bottom, name), size, block)
      names.push(name)
    }
    copyUpFiles.set(size, names)
  }
  const chmodFiles: string[] = []
  for (let i = 0; i < plan.chmod.files; i++) {
    const name = `meta/m${i}`
    writeData(join(bottom, name), plan.chmod.size, block)
    chmodFiles.push(name)
  }
  writeData(join(bottom, 'stream'), plan.streamBytes, block)
  const perDir = 100
  const small = Buffer.alloc(1024, 't')
  for (let i = 0; i < plan.treeFiles; i++) {
    const sub = join(bottom, 'tree', `d${Math.floor(i / perDir)}`)
    if (i % perDir === 0) mkdirSync(sub, { recursive: true })
    writeFileSync(join(sub, `f${i}`), small.subarray(0, 256 + (i % 3) * 384))
  }
  const plain = join(dir, 'plain')
  copyTree(bottom, plain)
  copyTree(join(top, 'data', 'README'), join(plain, 'data', 'README'))
  return {
    work: { root: dir, layers: ['l0', 'l1'], plain },
    copyUpFiles,
    chmodFiles,
    streamFile: 'stream',
    churnDir: 'churn',
    treeDir: 'tree'
  }
}

const STAT_DIRS = 50

/**
 * Every layer holds every directory, so directories merge across the whole stack (the case that
 * makes a per-layer probe walk all of it). A third of the paths are spread over the layers, a third
 * live only in the bottom layer, a third exist nowhere.
 */
function buildDepthStack (dir: string, depth: number, plan: BenchPlan): Stack {
  const layers = Array.from({ length: depth }, (_, i) => `l${i}`)
  for (const layer of layers) {
    for (let d = 0; d < STAT_DIRS; d++) mkdirSync(join(dir, layer, `d${d}`), { recursive: true })
  }
  const third = Math.ceil(plan.statPaths / 3)
  for (let j = 0; j < third; j++) {
    writeFileSync(join(dir, layers[j % depth]!, `d${j % STAT_DIRS}`, `s${j}`), '')
    writeFileSync(join(dir, 'l0', `d${j % STAT_DIRS}`, `b${j}`), '')
  }
  const plain = join(dir, 'plain')
  for (let d = 0; d < STAT_DIRS; d++) mkdirSync(join(plain, `d${d}`), { recursive: true })
  for (let j = 0; j < third; j++) {
    writeFileSync(join(plain, `d${j % STAT_DIRS}`, `s${j}`), '')
    writeFileSync(join(plain, `d${j % STAT_DIRS}`, `b${j}`), '')
  }
  return { root: dir, layers, plain }
}

function statList (file: string, plan: BenchPlan): void {
  const third = Math.ceil(plan.statPaths / 3)
  const paths: string[] = []
  for (let j = 0; j < third; j++) {
    paths.push(`d${j % STAT_DIRS}/s${j}`, `d${j % STAT_DIRS}/b${j}`, `d${j % STAT_DIRS}/m${j}`)
  }
  const random = prng(42)
  for (let i = paths.length - 1; i > 0; i--) {
    const k = Math.floor(random() * (i + 1))
    ;[paths[i], paths[k]] = [paths[k]!, paths[i]!]
  }
  writeFileSync(file, paths.slice(0, plan.statPaths).join('\n') + '\n')
}

/**
 * `entries` visible names spread round-robin over the layers, plus a tenth as many names in the
 * bottom layer that higher layers white out (char 0/0, the kernel's form).
 */
function buildReaddir (dir: string, plan: BenchPlan): Stack {
  const { entries, layers: count } = plan.readdir
  const layers = Array.from({ length: count }, (_, i) => `l${i}`)
  for (const layer of layers) mkdirSync(join(dir, layer, 'big'), { recursive: true })
  const plain = join(dir, 'plain', 'big')
  mkdirSync(plain, { recursive: true })
  for (let j = 0; j < entries; j++) {
    writeFileSync(join(dir, layers[j % count]!, 'big', `n${j}`), '')
    writeFileSync(join(plain, `n${j}`), '')
  }
  const hidden = Math.ceil(entries / 10)
  for (let j = 0; j < hidden; j++) {
    writeFileSync(join(dir, 'l0', 'big', `x${j}`), '')
    mknod(join(dir, layers[1 + (j % (count - 1))]!, 'big', `x${j}`), WHITEOUT, makedev(0, 0))
  }
  return { root: dir, layers, plain: join(dir, 'plain') }
}

/** Writes every layer the run needs under `dir`. Lower files hold incompressible data. */
export function buildFixtures (dir: string, plan: BenchPlan): Fixtures {
  const block = Buffer.alloc(1 << 20)
  const random = prng(7)
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE(Math.floor(random() * 4294967296), i)
  const work = buildWork(join(dir, 'work'), plan, block)
  const depthStacks = new Map<number, Stack>()
  for (const depth of plan.depths) depthStacks.set(depth, buildDepthStack(join(dir, `depth${depth}`), depth, plan))
  const list = join(dir, 'stat-paths')
  statList(list, plan)
  return {
    ...work,
    depthStacks,
    statList: list,
    readdir: buildReaddir(join(dir, 'readdir'), plan),
    readdirDir: 'big'
  }
}
