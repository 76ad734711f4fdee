import { spawnSync } from 'node:child_process'
import { cpus } from 'node:os'
import { StrataError } from '../errors.js'

export type CpuPin = 'same' | 'none'

/**
 * On a small VM a FUSE round trip is several times cheaper when the server wakes on the caller's
 * CPU. `same` puts the benchmark (and so every process it starts, which inherit the mask) on
 * one CPU, and each FUSE server found by its mountpoint on that CPU too. The last CPU is used:
 * the first takes most device interrupts.
 */
export function pinCpu (mode: CpuPin): number | undefined {
  if (mode === 'none') return undefined
  const cpu = cpus().length - 1
  setAffinity(process.pid, cpu)
  return cpu
}

/** All threads of `pid`, including the ones libfuse starts per request later (they inherit it). */
export function setAffinity (pid: number, cpu: number): void {
  const res = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { encoding: 'utf8' })
  if (res.error !== undefined || res.status !== 0) {
    throw new StrataError('INTERNAL', `taskset -a -p -c ${cpu} ${pid}: ${res.error?.message ?? res.stderr.trim()}`)
  }
}
