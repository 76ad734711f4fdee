import type { ImplName } from './implementations.js'
import { sizeLabel } from './plan.js'
import type { ChartPoint } from './results.js'
import type { BenchReport } from './run.js'

const COLORS: Record<ImplName, string> = {
  plain: '#888888',
  kernel: '#1f77b4',
  'fuse-overlayfs': '#ff7f0e',
  unionfs: '#9467bd',
  stratafs: '#d62728'
}

const W = 520
const H = 340
const PAD = { left: 70, right: 20, top: 40, bottom: 50 }

interface Series { impl: ImplName; dashed: boolean; points: Array<[number, number]> }

function esc (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function logTicks (lo: number, hi: number): number[] {
  const ticks: number[] = []
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(10 ** e)
  return ticks
}

/** One chart: log-scaled y, x either log-scaled (sizes) or linear (depths). */
function chart (offsetX: number, title: string, yLabel: string, xs: number[], xLog: boolean, xFormat: (x: number) => string, series: Series[]): string {
  const ys = series.flatMap(s => s.points.map(p => p[1])).filter(y => y > 0)
  if (ys.length === 0 || xs.length === 0) return ''
  const yTicks = logTicks(Math.min(...ys), Math.max(...ys))
  const y0 = Math.log10(yTicks[0]!)
  const y1 = Math.log10(yTicks[yTicks.length - 1]!)
  const fx = (x: number): number => {
    const [a, b] = xLog ? [Math.log10(xs[0]!), Math.log10(xs[xs.length - 1]!)] : [xs[0]!, xs[xs.length - 1]!]
    const v = xLog ? Math.log10(x) : x
    return offsetX + PAD.left + (b === a ? 0.5 : (v - a) / (b - a)) * (W - PAD.left - PAD.right)
  }
  const fy = (y: number): number => PAD.top + (1 - (Math.log10(y) - y0) / ((y1 - y0) || 1)) * (H - PAD.top - PAD.bottom)
  const out: string[] = []
  out.push(`<text x="${offsetX + W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`)
  for (const t of yTicks) {
    out.push(`<line x1="${offsetX + PAD.left}" x2="${offsetX + W - PAD.right}" y1="${fy(t)}" y2="${fy(t)}" stroke="#ddd"/>`)
    out.push(`<text x="${offsetX + PAD.left - 6}" y="${fy(t) + 4}" text-anchor="end" font-size="11">${t >= 1 ? t : t.toPrecision(1)}</text>`)
  }
  for (const x of xs) {
    out.push(`<line x1="${fx(x)}" x2="${fx(x)}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="#eee"/>`)
    out.push(`<text x="${fx(x)}" y="${H - PAD.bottom + 16}" text-anchor="middle" font-size="11">${esc(xFormat(x))}</text>`)
  }
  out.push(`<text x="${offsetX + 16}" y="${H / 2}" transform="rotate(-90 ${offsetX + 16} ${H / 2})" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`)
  for (const s of series) {
    const pts = s.points.filter(p => p[1] > 0)
    if (pts.length === 0) continue
    const color = COLORS[s.impl]
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''} points="${pts.map(([x, y]) => `${fx(x).toFixed(1)},${fy(y).toFixed(1)}`).join(' ')}"/>`)
    for (const [x, y] of pts) out.push(`<circle cx="${fx(x).toFixed(1)}" cy="${fy(y).toFixed(1)}" r="3" fill="${color}"/>`)
  }
  return out.join('\n')
}

function seriesOf (report: BenchReport, kind: ChartPoint['chart'], dashed: boolean): Series[] {
  const impls = report.implementations.filter(i => i.ran).map(i => i.name)
  return impls.map(impl => ({
    impl,
    dashed,
    points: report.rows
      .filter(r => r.point?.chart === kind && r.results[impl] != null)
      .map(r => [r.point!.x, r.results[impl]!.median] as [number, number])
      .sort((a, b) => a[0] - b[0])
  }))
}

/** Copy-up latency against file size, and stat cost against stack depth: one line per implementation. */
export function renderSvg (report: BenchReport): string {
  const xsOf = (kind: ChartPoint['chart']): number[] =>
    [...new Set(report.rows.filter(r => r.point?.chart === kind).map(r => r.point!.x))].sort((a, b) => a - b)
  const impls = report.implementations.filter(i => i.ran).map(i => i.name)
  const statPaths = /^(\d+) stats/.exec(report.rows.find(r => r.point?.chart === 'stat-cold')?.label ?? '')?.[1] ?? ''
  const legend = impls.map((impl, i) =>
    `<g transform="translate(${PAD.left + i * 150},${H + 8})"><line x1="0" x2="24" y1="0" y2="0" stroke="${COLORS[impl]}" stroke-width="3"/>` +
    `<text x="30" y="4" font-size="12">${esc(impl)}</text></g>`).join('\n')
  const m = report.machine
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 50}" font-family="sans-serif" viewBox="0 0 ${2 * W} ${H + 50}">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    chart(0, 'Copy-up: first write to a lower file', 'median latency (µs, log)', xsOf('copy-up'), true, sizeLabel, seriesOf(report, 'copy-up', false)),
    chart(W, `${statPaths} stats vs stack depth (solid cold, dashed warm)`, 'median total (ms, log)', xsOf('stat-cold'), false, x => String(x),
      [...seriesOf(report, 'stat-cold', false), ...seriesOf(report, 'stat-warm', true)]),
    legend,
    `<text x="${2 * W - 10}" y="${H + 40}" text-anchor="end" font-size="10" fill="#555">${esc(`${m.nproc} × ${m.cpu}, Linux ${m.kernel}, ${m.fs}; cpu pin ${report.cpuPin}; ${report.plan} run`)}</text>`,
    '</svg>'
  ].join('\n') + '\n'
}
