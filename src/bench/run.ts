import { spawnSync } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import { pinCpu, setAffinity, type CpuPin } from './cpu-pin.js'
import { buildFixtures, type Fixtures, type Stack } from './fixtures.js'
import { implementations, mountsUnder, removeMountDirs, type ImplName, type Implementation, type Mounted } from './implementations.js'
import { sizeLabel, type BenchPlan } from './plan.js'
import { Probe, type ProbeSample } from './probe.js'
import { Results, type Row } from './results.js'

export interface BenchOptions {
  plan: BenchPlan
  cpuPin: CpuPin
  /** Restrict the run to these implementations. */
  only?: ImplName[]
  /** Restrict the run to these workloads. */
  workloads?: Workload[]
  log: Logger
  /** Called after every step: steps done, steps in all, what just ran. */
  onStep?: (done: number, total: number, label: string) => void
  signal?: AbortSignal
}

export interface Machine { nproc: number; cpu: string; kernel: string; fs: string; memGiB: number }

export interface BenchReport {
  plan: BenchPlan['name']
  rounds: number
  cpuPin: CpuPin
  cpu: number | null
  coldCaches: boolean
  machine: Machine
  implementations: Array<{ name: ImplName; ran: boolean; reason?: string }>
  rows: Row[]
  notes: string[]
  seconds: number
}

const MiB = 1 << 20

function machine (dir: string): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  const fs = spawnSync('df', ['--output=fstype', dir], { encoding: 'utf8' }).stdout?.trim().split('\n')[1] ?? 'unknown'
  const mem = /MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))
  return {
    nproc: cpus().length,
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    kernel: release(),
    fs,
    memGiB: mem === null ? 0 : Math.round(Number(mem[1]) / (1 << 20))
  }
}

/**
 * Writes dirty pages back before a row that writes, for every implementation alike: the
 * writeback of one row (half a GiB after the 256 MiB copy-ups) is not charged to the next.
 */
function flush (): void {
  spawnSync('sync')
}

/** Writes dirty pages back and empties the page, dentry and inode caches. */
function dropCaches (): boolean {
  flush()
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

/** Reads a file straight from its layer so copy-ups measure the overlay, not the disk. */
function warm (path: string): void {
  const buf = Buffer.allocUnsafe(MiB)
  const fd = openSync(path, 'r')
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0) {}
  } finally {
    closeSync(fd)
  }
}

function timed (cmd: string, args: string[], cwd: string, stdout: 'pipe' | 'ignore'): number {
  const started = process.hrtime.bigint()
  const res = spawnSync(cmd, args, { cwd, stdio: ['ignore', stdout, 'pipe'], maxBuffer: 1 << 30 })
  const ns = Number(process.hrtime.bigint() - started)
  if (res.error !== undefined || res.status !== 0) {
    throw new StrataError('EIO', `${cmd} ${args.join(' ')} in ${cwd}: ${res.error?.message ?? (res.stderr.toString().trim() || `exit ${String(res.status)}`)}`)
  }
  return ns
}

const us = (s: ProbeSample[]): number[] => s.map(x => x.ns / 1e3)
const ms = (ns: number): number => ns / 1e6
const rate = (s: ProbeSample): number => (s.count / MiB) / (s.ns / 1e9)

/** The workload groups, by the name `--workload` takes. */
export const workloads = ['copy-up', 'stat', 'readdir', 'find', 'tar'] as const
export type Workload = typeof workloads[number]

interface Group {
  workload: Workload
  label: string
  stack: (fx: Fixtures) => Stack
  applies?: (impl: Implementation) => string | undefined
  /** Drop caches right after mounting. */
  cold: boolean
  measure (m: Mounted, impl: Implementation): void
}

/**
 * Runs every workload on every available implementation, interleaved: within a round each group
 * visits the implementations in an order that rotates from round to round, so drift on the
 * machine spreads over all of them. Every mount is undone before this returns or throws.
 */
export async function runBench (opts: BenchOptions): Promise<BenchReport> {
  const started = performance.now()
  const { plan, log } = opts
  const cpu = pinCpu(opts.cpuPin)
  const impls: Implementation[] = []
  const status: BenchReport['implementations'] = []
  for (const impl of implementations) {
    if (opts.only !== undefined && !opts.only.includes(impl.name)) continue
    const reason = impl.unavailable()
    status.push({ name: impl.name, ran: reason === undefined, ...(reason === undefined ? {} : { reason }) })
    if (reason === undefined) impls.push(impl)
    else log.warn({ impl: impl.name, reason }, 'skipped')
  }
  const scratch = mkdtempSync(join(tmpdir(), 'stratafs-bench-'))
  const active = new Set<{ mounted: Mounted; dir: string }>()
  let coldCaches = true
  const results = new Results()
  try {
    const probe = Probe.compile(scratch)
    log.info({ plan: plan.name, scratch }, 'building layer fixtures')
    const fx = buildFixtures(join(scratch, 'fx'), plan)
    const groups = defineGroups(plan, fx, probe, results).filter(g => opts.workloads?.includes(g.workload) ?? true)
    const total = plan.rounds * groups.length * impls.length
    let done = 0
    let mountSeq = 0
    for (let round = 0; round < plan.rounds; round++) {
      for (const group of groups) {
        for (let k = 0; k < impls.length; k++) {
          const impl = impls[(k + round) % impls.length]!
          if (opts.signal?.aborted === true) throw new StrataError('INTERNAL', 'interrupted')
          const skip = group.applies?.(impl)
          if (skip !== undefined) {
            results.note(`${impl.name}: ${group.label} not measured: ${skip}`)
          } else {
            const dir = join(scratch, `m${mountSeq++}`)
            mkdirSync(dir)
            const mounted = impl.mount(group.stack(fx), dir)
            const entry = { mounted, dir }
            active.add(entry)
            try {
              if (cpu !== undefined && mounted.serverPid !== undefined) setAffinity(mounted.serverPid, cpu)
              if (group.cold) coldCaches = dropCaches() && coldCaches
              group.measure(mounted, impl)
            } finally {
              mounted.unmount()
              active.delete(entry)
              removeMountDirs(dir)
            }
          }
          opts.onStep?.(++done, total, `${group.label} · ${impl.name} · round ${round + 1}/${plan.rounds}`)
          // Lets a pending SIGINT be seen between steps: everything above is synchronous.
          await new Promise(resolve => setImmediate(resolve))
        }
      }
    }
  } finally {
    for (const { mounted, dir } of active) {
      try { mounted.unmount() } catch (err) { log.error({ err, mount: mounted.path }, 'unmount failed') }
      removeMountDirs(dir)
    }
    const left = mountsUnder(scratch)
    if (left.length > 0) log.error({ mounts: left }, 'mounts left behind; scratch directory kept')
    else rmSync(scratch, { recursive: true, force: true })
  }
  if (!coldCaches) results.note('caches could not be dropped (not root?): cold runs had only a fresh mount')
  return {
    plan: plan.name,
    rounds: plan.rounds,
    cpuPin: opts.cpuPin,
    cpu: cpu ?? null,
    coldCaches,
    machine: machine(tmpdir()),
    implementations: status,
    rows: results.rows(impls.map(i => i.name)),
    notes: results.notes,
    seconds: (performance.now() - started) / 1000
  }
}

function defineGroups (plan: BenchPlan, fx: Fixtures, probe: Probe, results: Results): Group[] {
  const list = (name: string, paths: string[]): string => {
    const file = join(fx.work.root, `${name}.list`)
    writeFileSync(file, paths.join('\n') + '\n')
    return file
  }
  const stream = sizeLabel(plan.streamBytes)
  results.define({ id: 'read-cold', label: `seq read ${stream} lower, cold`, unit: 'MiB/s', higherIsBetter: true })
  results.define({ id: 'read-warm', label: `seq read ${stream} lower, warm`, unit: 'MiB/s', higherIsBetter: true })
  for (const { size } of plan.copyUp) {
    results.define({ id: `copyup-${size}`, label: `copy-up 1st write ${sizeLabel(size)}`, unit: 'µs', higherIsBetter: false, point: { chart: 'copy-up', x: size } })
    results.define({ id: `second-${size}`, label: `2nd write ${sizeLabel(size)}`, unit: 'µs', higherIsBetter: false })
  }
  results.define({ id: 'chmod', label: `chmod lower ${sizeLabel(plan.chmod.size)} file`, unit: 'µs', higherIsBetter: false })
  results.define({ id: 'write', label: `seq write new ${stream}`, unit: 'MiB/s', higherIsBetter: true })
  results.define({ id: 'churn', label: `create+4K+unlink ×${plan.churnFiles}`, unit: 'µs', higherIsBetter: false })
  const io: Group = {
    workload: 'copy-up',
    label: 'copy-up and streams',
    stack: f => f.work,
    cold: true,
    measure (m, impl) {
      const [cold] = probe.run(m.path, ['read', fx.streamFile])
      const [warmRead] = probe.run(m.path, ['read', fx.streamFile])
      results.add('read-cold', impl.name, rate(cold!))
      results.add('read-warm', impl.name, rate(warmRead!))
      const source = impl.name === 'plain' ? fx.work.plain : join(fx.work.root, fx.work.layers[0]!)
      for (const path of [...[...fx.copyUpFiles.values()].flat(), ...fx.chmodFiles]) warm(join(source, path))
      const run = (args: string[]): ProbeSample[] => {
        flush()
        return probe.run(m.path, args)
      }
      for (const [size, paths] of fx.copyUpFiles) {
        const file = list(`copyup-${size}`, paths)
        results.add(`copyup-${size}`, impl.name, ...us(run(['append1', file])))
        results.add(`second-${size}`, impl.name, ...us(run(['append1', file])))
      }
      results.add('chmod', impl.name, ...us(run(['chmod', list('chmod', fx.chmodFiles)])))
      const [written] = run(['write', 'written', String(plan.streamBytes)])
      results.add('write', impl.name, rate(written!))
      rmSync(join(m.path, 'written'))
      results.add('churn', impl.name, ...us(run(['churn', fx.churnDir, String(plan.churnFiles)])))
    }
  }
  const expectedHits = (() => {
    const paths = readFileSync(fx.statList, 'utf8').trim().split('\n')
    return paths.filter(p => !/\/m\d+$/.test(p)).length
  })()
  const depthGroups: Group[] = plan.depths.map(depth => {
    const label = `${plan.statPaths} stats, ${depth} layer${depth === 1 ? '' : 's'}`
    results.define({ id: `stat-cold-${depth}`, label: `${label}, cold`, unit: 'ms', higherIsBetter: false, point: { chart: 'stat-cold', x: depth } })
    results.define({ id: `stat-warm-${depth}`, label: `${label}, warm`, unit: 'ms', higherIsBetter: false, point: { chart: 'stat-warm', x: depth } })
    results.define({ id: `mount-${depth}`, label: `mount, ${depth} layer${depth === 1 ? '' : 's'}`, unit: 'ms', higherIsBetter: false })
    return {
      workload: 'stat',
      label: `stat at depth ${depth}`,
      stack: f => f.depthStacks.get(depth)!,
      cold: true,
      measure (m, impl) {
        if (impl.name !== 'plain') results.add(`mount-${depth}`, impl.name, m.mountMs)
        for (const phase of ['cold', 'warm']) {
          const [s] = probe.run(m.path, ['stat', fx.statList])
          if (s!.count !== expectedHits) results.note(`${impl.name}: ${label}: found ${s!.count} paths, expected ${expectedHits}`)
          results.add(`stat-${phase}-${depth}`, impl.name, ms(s!.ns))
        }
      }
    }
  })
  const rdLabel = `readdir ${plan.readdir.entries} entries, ${plan.readdir.layers} layers`
  results.define({ id: 'readdir-cold', label: `${rdLabel}, cold`, unit: 'ms', higherIsBetter: false })
  results.define({ id: 'readdir-warm', label: `${rdLabel}, warm`, unit: 'ms', higherIsBetter: false })
  const readdir: Group = {
    workload: 'readdir',
    label: 'readdir',
    stack: f => f.readdir,
    applies: impl => impl.kernelWhiteouts ? undefined : 'its whiteouts are not the kernel\'s char 0/0 form the layers use',
    cold: true,
    measure (m, impl) {
      for (const phase of ['cold', 'warm']) {
        const [s] = probe.run(m.path, ['readdir', fx.readdirDir])
        if (s!.count !== plan.readdir.entries) results.note(`${impl.name}: ${rdLabel}: listed ${s!.count}, expected ${plan.readdir.entries}`)
        results.add(`readdir-${phase}`, impl.name, ms(s!.ns))
      }
    }
  }
  const walk = (tool: 'find' | 'tar'): Group => {
    const args = tool === 'find' ? [fx.treeDir, '-type', 'f'] : ['-cf', '-', fx.treeDir]
    // tar notices an archive that is /dev/null and then reads no file data: give it a pipe.
    const stdout = tool === 'find' ? 'ignore' : 'pipe'
    for (const phase of ['cold', 'warm']) {
      results.define({ id: `${tool}-${phase}`, label: `${tool === 'find' ? 'find -type f' : 'tar -c'} ${plan.treeFiles} files, ${phase}`, unit: 'ms', higherIsBetter: false })
    }
    return {
      workload: tool,
      label: tool,
      stack: f => f.work,
      cold: true,
      measure (m, impl) {
        for (const phase of ['cold', 'warm']) results.add(`${tool}-${phase}`, impl.name, ms(timed(tool, args, m.path, stdout)))
      }
    }
  }
  return [io, ...depthGroups, readdir, walk('find'), walk('tar')]
}
