import { closeSync, constants, openSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { StrataError } from '../errors.js'
import { tryLockExclusive } from '../sys/index.js'

export interface UpperClaim {
  release (): void
}

/**
 * How long a mount waits for another server of the same dirs to end: one whose mount was just
 * unmounted (podman unmounts a container and may mount it again at once) learns of it at its
 * next read of the FUSE device and then exits.
 */
const WAIT_MS = 5000
const RETRY_MS = 20

/**
 * Two servers on one upper or one work dir would undo each other's work: each empties the work
 * dir's scratch space when it mounts, and spare files, the inode log and the lower index live
 * there. Kernel overlayfs refuses such a second mount when its index feature is on and only warns
 * otherwise; stratafs refuses it. The claim is an flock on each directory, held until released
 * or until the server dies. A filesystem that takes no flock on a directory (some network ones)
 * leaves that directory unclaimed, with a warning: the mount goes on as fuse-overlayfs's would.
 */
export async function claimUpper (upper: { upperDir: string, workDir: string }, log: Logger, waitMs = WAIT_MS): Promise<UpperClaim> {
  const started = performance.now()
  const unlockable = new Set<string>()
  for (;;) {
    const busy = tryClaim(upper, unlockable, log)
    if (typeof busy !== 'string') return busy
    if (performance.now() - started >= waitMs) throw new StrataError('EBUSY', `${busy} is in use by another mount`)
    await sleep(RETRY_MS)
  }
}

/** The claim, or which directory another holds. `unlockable`: the dirs already warned about. */
function tryClaim (upper: { upperDir: string, workDir: string }, unlockable: Set<string>, log: Logger): UpperClaim | string {
  const fds: number[] = []
  const release = (): void => {
    for (const fd of fds.splice(0)) closeSync(fd)
  }
  try {
    for (const [what, dir] of [['upperdir', upper.upperDir], ['workdir', upper.workDir]] as const) {
      const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY)
      fds.push(fd)
      let locked: boolean
      try {
        locked = tryLockExclusive(fd)
      } catch (err) {
        if (!unlockable.has(dir)) log.warn({ err, dir }, `cannot lock the ${what}: a second mount of it would not be refused`)
        unlockable.add(dir)
        continue
      }
      if (!locked) {
        release()
        return `${what} ${dir}`
      }
    }
  } catch (err) {
    release()
    throw err
  }
  return { release }
}
