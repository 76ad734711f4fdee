import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { StrataError } from '../errors.js'

/** One line of the probe's output: nanoseconds and a count (found paths, entries, bytes). */
export interface ProbeSample { ns: number; count: number }

/** probe.c stays a C file in the source tree; tsc does not copy it, so it is found from dist/ too. */
function probeSource (): string {
  const here = fileURLToPath(new URL('.', import.meta.url))
  for (const candidate of [join(here, 'probe.c'), join(here, '..', '..', 'src', 'bench', 'probe.c')]) {
    if (existsSync(candidate)) return candidate
  }
  throw new StrataError('NOT_FOUND', 'src/bench/probe.c is missing')
}

/** The C timing loop, compiled once per run into the run's scratch directory. */
export class Probe {
  private constructor (readonly binary: string) {}

  static compile (scratch: string): Probe {
    const binary = join(scratch, 'probe')
    const cc = spawnSync('cc', ['-O2', '-o', binary, probeSource()], { encoding: 'utf8' })
    if (cc.error !== undefined || cc.status !== 0) {
      throw new StrataError('INTERNAL', `cc could not build the probe: ${cc.error?.message ?? cc.stderr.trim()}`)
    }
    return new Probe(binary)
  }

  /** Runs one probe mode with `cwd` as its working directory (the mount under test). */
  run (cwd: string, args: string[]): ProbeSample[] {
    const res = spawnSync(this.binary, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 })
    if (res.error !== undefined || res.status !== 0) {
      throw new StrataError('EIO', `probe ${args.join(' ')} in ${cwd}: ${res.error?.message ?? (res.stderr.trim() || `exit ${String(res.status)}`)}`)
    }
    return res.stdout.trim().split('\n').filter(l => l !== '').map(line => {
      const [ns, count] = line.split(' ')
      return { ns: Number(ns), count: Number(count) }
    })
  }
}
