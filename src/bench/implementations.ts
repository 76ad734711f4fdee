import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { StrataError } from '../errors.js'
import { isAtOrBelow, readMountInfoSync } from '../sys/mountinfo.js'
import type { Stack } from './fixtures.js'

export type ImplName = 'plain' | 'kernel' | 'fuse-overlayfs' | 'unionfs' | 'stratafs'

/** A mounted (or, for the floor, merely chosen) view of a stack. */
export interface Mounted {
  impl: ImplName
  path: string
  /** The process serving a FUSE mount, found from its mountpoint. */
  serverPid?: number
  mountMs: number
  unmount (): void
}

export interface Implementation {
  name: ImplName
  /** Why it cannot run here, or undefined when it can. */
  unavailable (): string | undefined
  /** Whether it shows kernel-form (char 0/0) whiteouts as whiteouts. */
  kernelWhiteouts: boolean
  mount (stack: Stack, dir: string): Mounted
}

const MOUNT_WAIT_MS = 10_000

function run (cmd: string, args: string[], cwd?: string): void {
  const res = spawnSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 })
  if (res.error !== undefined || res.status !== 0) {
    throw new StrataError('MOUNT_FAILED', `${cmd} ${args.join(' ')}: ${res.error?.message ?? (res.stderr.trim() || `exit ${String(res.status)}`)}`)
  }
}

function which (cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

export function isMountpoint (path: string): boolean {
  return readMountInfoSync().some(m => m.mountpoint === path)
}

/** Mountpoints at or below `dir`: what a run must leave behind none of. */
export function mountsUnder (dir: string): string[] {
  return [...new Set(readMountInfoSync().map(m => m.mountpoint).filter(p => isAtOrBelow(p, dir)))]
}

/** The process that holds /dev/fuse open and was given `mountpoint` on its command line. */
export function findServerPid (mountpoint: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
      if (!args.includes(mountpoint)) continue
      const fds = readdirSync(`/proc/${entry}/fd`)
      if (fds.some(fd => { try { return readlinkSync(`/proc/${entry}/fd/${fd}`) === '/dev/fuse' } catch { return false } })) return Number(entry)
    } catch {}
  }
  return undefined
}

function waitFor (what: string, done: () => boolean): void {
  const deadline = Date.now() + MOUNT_WAIT_MS
  while (!done()) {
    if (Date.now() > deadline) throw new StrataError('MOUNT_FAILED', `timed out waiting for ${what}`)
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5)
  }
}

function processGone (pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z'
  } catch {
    return true
  }
}

/**
 * fusermount -u, falling back to a lazy unmount; then the server is told to go (some notice an
 * unmount only by polling) and waited for, so no dying process runs into the next measurement.
 */
function unmountFuse (mountpoint: string, serverPid: number | undefined): void {
  if (isMountpoint(mountpoint)) {
    const res = spawnSync('fusermount', ['-u', mountpoint], { stdio: 'ignore' })
    if (res.status !== 0 || isMountpoint(mountpoint)) spawnSync('umount', ['-l', mountpoint], { stdio: 'ignore' })
  }
  if (serverPid === undefined) return
  if (!processGone(serverPid)) {
    try { process.kill(serverPid, 'SIGTERM') } catch {}
  }
  try {
    waitFor(`server ${serverPid} to exit`, () => processGone(serverPid))
  } catch {
    try { process.kill(serverPid, 'SIGKILL') } catch {}
  }
}

/** Fresh upper, work and mountpoint directories for one mount. */
function mountDirs (dir: string): { upper: string; work: string; mnt: string } {
  const dirs = { upper: join(dir, 'upper'), work: join(dir, 'work'), mnt: join(dir, 'mnt') }
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true })
  return dirs
}

function topFirst (stack: Stack): string {
  return [...stack.layers].reverse().join(':')
}

function fuseMount (impl: ImplName, stack: Stack, dir: string, cmd: string, args: (d: ReturnType<typeof mountDirs>) => string[]): Mounted {
  const d = mountDirs(dir)
  const started = performance.now()
  let serverPid: number | undefined
  try {
    run(cmd, args(d), stack.root)
    waitFor(`${impl} to mount ${d.mnt}`, () => isMountpoint(d.mnt))
    serverPid = findServerPid(d.mnt)
  } catch (err) {
    unmountFuse(d.mnt, findServerPid(d.mnt))
    throw err
  }
  return {
    impl,
    path: d.mnt,
    serverPid,
    mountMs: performance.now() - started,
    unmount: () => unmountFuse(d.mnt, serverPid)
  }
}

const overlayMain = fileURLToPath(new URL('../bundle/overlay-main.js', import.meta.url))
/** As podman and mount(8) start it: the mount time is the one they wait for. */
const launcher = fileURLToPath(new URL('../../bin/stratafs-overlay', import.meta.url))

export const implementations: Implementation[] = [
  {
    name: 'plain',
    kernelWhiteouts: true,
    unavailable: () => undefined,
    mount: (stack) => ({ impl: 'plain', path: stack.plain, mountMs: 0, unmount: () => {} })
  },
  {
    name: 'kernel',
    kernelWhiteouts: true,
    unavailable: () => readFileSync('/proc/filesystems', 'utf8').includes('\toverlay') ? undefined : 'no overlay in /proc/filesystems',
    mount (stack, dir) {
      const d = mountDirs(dir)
      const started = performance.now()
      // Relative lower paths keep 128 layers inside the one-page limit of mount options.
      run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${topFirst(stack)},upperdir=${d.upper},workdir=${d.work}`, d.mnt], stack.root)
      return {
        impl: 'kernel',
        path: d.mnt,
        mountMs: performance.now() - started,
        unmount: () => {
          for (const args of [[d.mnt], ['-l', d.mnt]]) if (isMountpoint(d.mnt)) spawnSync('umount', args, { stdio: 'ignore' })
        }
      }
    }
  },
  {
    name: 'fuse-overlayfs',
    kernelWhiteouts: true,
    unavailable: () => which('fuse-overlayfs') ? undefined : 'fuse-overlayfs is not installed',
    mount: (stack, dir) => fuseMount('fuse-overlayfs', stack, dir, 'fuse-overlayfs',
      d => ['-o', `lowerdir=${topFirst(stack)},upperdir=${d.upper},workdir=${d.work},metacopy=on`, d.mnt])
  },
  {
    name: 'unionfs',
    // unionfs-fuse keeps its own whiteouts (.unionfs-fuse/*_HIDDEN~) and shows char 0/0 ones as files.
    kernelWhiteouts: false,
    unavailable: () => which('unionfs') ? undefined : 'unionfs-fuse is not installed',
    mount: (stack, dir) => fuseMount('unionfs', stack, dir, 'unionfs',
      d => ['-o', 'cow,allow_other', [`${d.upper}=RW`, ...[...stack.layers].reverse().map(l => `${l}=RO`)].join(':'), d.mnt])
  },
  {
    name: 'stratafs',
    kernelWhiteouts: true,
    unavailable: () => existsSync(overlayMain) ? undefined : `${overlayMain} is missing: build first`,
    mount: (stack, dir) => fuseMount('stratafs', stack, dir, launcher,
      d => ['-o', `lowerdir=${topFirst(stack)},upperdir=${d.upper},workdir=${d.work},metacopy=on`, d.mnt])
  }
]

/** Removes one mount's directories once it is unmounted. */
export function removeMountDirs (dir: string): void {
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true })
}
