import type { ImplName } from './implementations.js'
import type { Cell, Unit } from './results.js'
import type { BenchReport } from './run.js'

function num (value: number): string {
  if (!Number.isFinite(value)) return '-'
  if (value >= 100) return value.toFixed(0)
  if (value >= 10) return value.toFixed(1)
  return value.toFixed(2)
}

function cell (c: Cell | null | undefined): string {
  return c == null ? 'n/a' : `${num(c.median)} / ${num(c.p99)}`
}

function ratio (r: number | null | undefined): string {
  return r == null ? '-' : `${r.toFixed(2)}×`
}

const UNIT_NOTE: Record<Unit, string> = { µs: 'µs', ms: 'ms', 'MiB/s': 'MiB/s ↑' }

/**
 * Workload rows × implementations, each cell "median / p99" (for rates the p99 is the slow end,
 * the 1st percentile), then stratafs's ratios to kernel overlayfs and to fuse-overlayfs.
 */
export function formatTable (report: BenchReport): string {
  const impls = report.implementations.filter(i => i.ran).map(i => i.name)
  const subject: ImplName = 'stratafs'
  const header = ['workload', 'unit', ...impls, `${subject}÷kernel`, `${subject}÷fuse-ovl`]
  const rows = report.rows.map(r => [
    r.label,
    UNIT_NOTE[r.unit],
    ...impls.map(i => cell(r.results[i])),
    ratio(r.ratioToKernel[subject]),
    ratio(r.ratioToFuseOverlayfs[subject])
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join('  ').trimEnd()
  const m = report.machine
  const lines = [
    `stratafs bench (${report.plan}, ${report.rounds} round${report.rounds === 1 ? '' : 's'}, ${report.seconds.toFixed(0)} s): ` +
      `${m.nproc} × ${m.cpu}, ${m.memGiB} GiB, Linux ${m.kernel}, layers on ${m.fs}`,
    `cpu pin: ${report.cpuPin === 'same' ? `same (benchmark and FUSE servers on CPU ${String(report.cpu)})` : 'none (scheduler decides)'}; ` +
      `cold runs: fresh mount${report.coldCaches ? ' + dropped caches' : ' only'}`,
    ...report.implementations.filter(i => !i.ran).map(i => `skipped ${i.name}: ${i.reason ?? ''}`),
    '',
    line(header),
    line(header.map((_, i) => '-'.repeat(widths[i]!))),
    ...rows.map(line),
    '',
    'cells: median / p99 (for MiB/s: median / 1st percentile); ratios are of medians, in the row\'s unit.',
    ...report.notes.map(n => `note: ${n}`)
  ]
  return lines.join('\n') + '\n'
}
