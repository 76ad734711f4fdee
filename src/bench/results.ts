import type { ImplName } from './implementations.js'
import { median, percentile } from './stats.js'

export type Unit = 'µs' | 'ms' | 'MiB/s'

/** Which chart a row is a point of, and where on its x axis. */
export interface ChartPoint { chart: 'copy-up' | 'stat-cold' | 'stat-warm'; x: number }

export interface RowSpec {
  id: string
  label: string
  unit: Unit
  higherIsBetter: boolean
  point?: ChartPoint
}

export interface Cell { median: number; p99: number; samples: number }

export interface Row extends RowSpec {
  /** null where the implementation was skipped or the workload does not apply to it. */
  results: Partial<Record<ImplName, Cell | null>>
  /** Each implementation's median over the reference's, in the row's unit (for MiB/s above 1 is faster). */
  ratioToKernel: Partial<Record<ImplName, number | null>>
  ratioToFuseOverlayfs: Partial<Record<ImplName, number | null>>
}

/** Samples per row and implementation, in the row's unit, plus what went wrong where. */
export class Results {
  private readonly specs = new Map<string, RowSpec>()
  private readonly samples = new Map<string, Map<ImplName, number[]>>()
  readonly notes: string[] = []

  define (spec: RowSpec): void {
    if (!this.specs.has(spec.id)) this.specs.set(spec.id, spec)
  }

  add (id: string, impl: ImplName, ...values: number[]): void {
    if (!this.specs.has(id)) throw new Error(`undefined bench row ${id}`)
    let byImpl = this.samples.get(id)
    if (byImpl === undefined) this.samples.set(id, byImpl = new Map())
    byImpl.set(impl, [...(byImpl.get(impl) ?? []), ...values])
  }

  note (text: string): void {
    if (!this.notes.includes(text)) this.notes.push(text)
  }

  /** One row per measured workload; workloads the run left out have none. */
  rows (impls: ImplName[]): Row[] {
    return [...this.specs.values()].filter(spec => this.samples.has(spec.id)).map(spec => {
      const results: Row['results'] = {}
      for (const impl of impls) {
        const s = this.samples.get(spec.id)?.get(impl)
        // For a rate the slow tail is the low end.
        results[impl] = s === undefined || s.length === 0
          ? null
          : { median: median(s), p99: spec.higherIsBetter ? percentile(s, 1) : percentile(s, 99), samples: s.length }
      }
      const ratio = (ref: ImplName): Partial<Record<ImplName, number | null>> => {
        const out: Partial<Record<ImplName, number | null>> = {}
        const base = results[ref]?.median
        for (const impl of impls) {
          const mine = results[impl]?.median
          out[impl] = base === undefined || mine === undefined || base === 0 ? null : mine / base
        }
        return out
      }
      return { ...spec, results, ratioToKernel: ratio('kernel'), ratioToFuseOverlayfs: ratio('fuse-overlayfs') }
    })
  }
}
