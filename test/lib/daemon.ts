import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, mkdtempSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Teardownable } from './tap.js'

/**
 * Test helper: one stratafs daemon in its own process over a fresh root. The daemon serves FUSE
 * mounts, so the test process (never the daemon) is the one that reads and writes through them.
 */

export const repoDir = resolve(fileURLToPath(new URL('../..', import.meta.url)))
export const cliMain = join(repoDir, 'dist', 'bundle', 'main.js')

export interface CliResult { code: number; stdout: string; stderr: string }

export interface CliOptions {
  env?: Record<string, string | undefined>
  input?: string
  timeoutMs?: number
  /** Leave out the STRATAFS_ROOT/socket the helper would pass. */
  bare?: boolean
}

export interface DaemonOptions {
  /** Reuse an existing root instead of a fresh one (e.g. to restart a daemon on it). */
  root?: string
  socket?: string
  env?: Record<string, string | undefined>
  /** Extra arguments after `daemon`. */
  args?: string[]
  /** Further directories whose mounts are lazily unmounted at teardown. */
  watchDirs?: string[]
  startTimeoutMs?: number
}

export interface Daemon {
  /** Temp dir holding the root and every `dir()`; removed at teardown. */
  base: string
  root: string
  socket: string
  proc: ChildProcess
  /** Resolves with the daemon's exit status. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Everything the daemon wrote to stderr (its pino logs). */
  logs (): string
  /** A fresh directory next to the root; mounts under it are cleaned at teardown. */
  dir (name: string): string
  cli (args: string[], opts?: CliOptions): Promise<CliResult>
  stop (): Promise<void>
}

/** Runs the CLI as its own process. */
export function runCli (args: string[], opts: CliOptions & { root?: string; socket?: string } = {}): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, STRATAFS_LOG: process.env.STRATAFS_LOG ?? 'warn' }
  delete env.STRATAFS_ROOT
  if (!opts.bare && opts.root !== undefined) env.STRATAFS_ROOT = opts.root
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k]
    else env[k] = v
  }
  const extra = !opts.bare && opts.socket !== undefined ? ['--socket', opts.socket] : []
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [cliMain, ...args, ...extra], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`stratafs ${args.join(' ')} timed out; stderr: ${stderr}`))
    }, opts.timeoutMs ?? 120_000)
    child.on('error', (err) => { clearTimeout(timer); reject(err) })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolvePromise({ code: code ?? (signal !== null ? 128 : 1), stdout, stderr })
    })
    child.stdin.end(opts.input ?? '')
  })
}

/** Mountpoints from /proc/self/mountinfo, octal escapes decoded. */
export function mountpoints (): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((line) =>
    line.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
}

/** Lazily unmounts every mount at or under one of `dirs`, deepest first. */
export function unmountUnder (dirs: string[]): string[] {
  const under = mountpoints()
    .filter((mp) => dirs.some((d) => mp === d || mp.startsWith(d.endsWith('/') ? d : d + '/')))
    .sort((a, b) => b.length - a.length)
  for (const mp of under) spawnSync('umount', ['-l', mp], { stdio: 'ignore' })
  return under
}

function canConnect (socket: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const s = connect(socket)
    s.once('connect', () => { s.destroy(); resolvePromise(true) })
    s.once('error', () => resolvePromise(false))
  })
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export async function startDaemon (t: Teardownable, opts: DaemonOptions = {}): Promise<Daemon> {
  if (!existsSync(cliMain)) throw new Error(`${cliMain} is missing: run \`npm run build\` first`)
  // A short path: unix socket paths are limited to 108 bytes.
  const base = mkdtempSync(join(tmpdir(), 'stratafs-t-'))
  const root = opts.root ?? join(base, 'root')
  const socket = opts.socket ?? join(root, 'stratafs.sock')
  mkdirSync(root, { recursive: true })

  const env: NodeJS.ProcessEnv = { ...process.env, STRATAFS_LOG: process.env.STRATAFS_LOG ?? 'debug' }
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k]
    else env[k] = v
  }
  const args = [cliMain, 'daemon', '--root', root, ...(opts.socket !== undefined ? ['--socket', socket] : []), ...(opts.args ?? [])]
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let logs = ''
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => { logs += d })
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { logs += d })
  let done = false
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise) => {
    proc.on('exit', (code, signal) => { done = true; resolvePromise({ code, signal }) })
  })

  const watch = [base, root, ...(opts.watchDirs ?? [])]
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    if (!done) {
      proc.kill('SIGTERM')
      const graceful = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)])
      if (!graceful) {
        proc.kill('SIGKILL')
        await exited
      }
    }
    unmountUnder(watch)
  }
  t.teardown(async () => {
    await stop()
    unmountUnder(watch)
    rmSync(base, { recursive: true, force: true })
  })

  const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000)
  while (!(existsSync(socket) && await canConnect(socket))) {
    if (done) throw new Error(`daemon exited before listening:\n${logs}`)
    if (Date.now() > deadline) throw new Error(`daemon did not listen on ${socket} in time:\n${logs}`)
    await sleep(50)
  }

  let n = 0
  return {
    base,
    root,
    socket,
    proc,
    exited,
    logs: () => logs,
    dir: (name: string) => {
      const d = join(base, `${name}-${++n}`)
      mkdirSync(d, { recursive: true })
      return d
    },
    cli: (cliArgs, cliOpts = {}) => runCli(cliArgs, { ...cliOpts, root, socket }),
    stop
  }
}
