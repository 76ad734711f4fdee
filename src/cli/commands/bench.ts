import { writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { CpuPin } from '../../bench/cpu-pin.js'
import type { ImplName } from '../../bench/implementations.js'
import type { BenchPlan } from '../../bench/plan.js'
import type { Workload } from '../../bench/run.js'
import { UsageError, type Command } from '../command.js'
import { json } from '../format.js'

/**
 * The benchmark's own modules, with pino, koffi and the progress bar: loaded by it alone, so that
 * no other command waits for them (about 10 ms of every command's start).
 */
async function benchModules () {
  const [{ default: cliProgress }, { createLogger }, { implementations }, { plans }, { runBench, workloads }, { renderSvg }, { formatTable }] = await Promise.all([
    import('cli-progress'), import('../../log.js'), import('../../bench/implementations.js'), import('../../bench/plan.js'),
    import('../../bench/run.js'), import('../../bench/svg.js'), import('../../bench/table.js')
  ])
  return { cliProgress, createLogger, implementations, plans, runBench, workloads, renderSvg, formatTable }
}

/**
 * `stratafs bench`: needs no daemon; it mounts stratafs the way fuse-overlayfs is mounted, next to
 * the peers, on the same layer directories. `--tiny` (undocumented) is for the test suite.
 */
export const benchCommands: Command[] = [{
  words: ['bench'],
  usage: 'bench [--quick] [--cpu-pin same|none] [--only IMPL,...] [--workload NAME,...] [--json] [--svg FILE]',
  summary: 'COW latency benchmark against kernel overlayfs, fuse-overlayfs, unionfs-fuse and a plain directory',
  options: {
    quick: { type: 'boolean' },
    tiny: { type: 'boolean' },
    'cpu-pin': { type: 'string' },
    only: { type: 'string' },
    workload: { type: 'string' },
    json: { type: 'boolean' },
    svg: { type: 'string' }
  },
  args: { min: 0, max: 0 },
  async run (ctx) {
    const { cliProgress, createLogger, implementations, plans, runBench, workloads, renderSvg, formatTable } = await benchModules()
    const pin = (ctx.opts['cpu-pin'] ?? 'same') as string
    if (pin !== 'same' && pin !== 'none') throw new UsageError('--cpu-pin takes same or none')
    const only = listOption<ImplName>(ctx.opts.only, '--only', implementations.map(i => i.name))
    const workload = listOption<Workload>(ctx.opts.workload, '--workload', workloads)
    const plan: BenchPlan = ctx.opts.tiny === true ? plans.tiny : ctx.opts.quick === true ? plans.quick : plans.full
    const svgPath = resolve(typeof ctx.opts.svg === 'string' ? ctx.opts.svg : 'bench.svg')
    const log = createLogger(process.env.STRATAFS_LOG ?? 'warn').child({ sub: 'bench' })
    const bar = process.stderr.isTTY
      ? new cliProgress.SingleBar({ format: ' {bar} {value}/{total} | {label}', stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic)
      : undefined
    const abort = new AbortController()
    const interrupt = (): void => {
      // A second Ctrl-C while cleanup is still running is not allowed to cut it short.
      if (!abort.signal.aborted) process.stderr.write('\nstratafs bench: interrupted, unmounting\n')
      abort.abort()
    }
    process.on('SIGINT', interrupt)
    process.on('SIGTERM', interrupt)
    let report
    try {
      report = await runBench({
        plan,
        cpuPin: pin as CpuPin,
        only,
        workloads: workload,
        log,
        signal: abort.signal,
        onStep: (done, total, label) => {
          if (bar === undefined) return
          if (done === 1) bar.start(total, 0, { label })
          bar.update(done, { label })
        }
      })
    } finally {
      bar?.stop()
      process.off('SIGINT', interrupt)
      process.off('SIGTERM', interrupt)
    }
    writeFileSync(svgPath, renderSvg(report))
    if (ctx.opts.json === true) return ctx.out(json({ ...report, svg: svgPath }))
    ctx.out(formatTable(report) + `chart: ${svgPath}\n`)
  }
}]

/** A comma-separated option whose items must be among `known`; undefined when not given. */
function listOption<T extends string> (value: unknown, flag: string, known: readonly T[]): T[] | undefined {
  if (typeof value !== 'string') return undefined
  const items = value.split(',').filter(n => n !== '') as T[]
  const unknown = items.filter(n => !known.includes(n))
  if (unknown.length > 0) throw new UsageError(`${flag}: unknown ${unknown.join(', ')} (known: ${known.join(', ')})`)
  return items
}
