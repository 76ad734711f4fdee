import { accessSync, constants, realpathSync, statSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { StrataError, errorCode } from '../errors.js'
import { isAtOrBelow, mountOf, readMountInfo } from '../sys/mountinfo.js'

/**
 * What a standalone mount refuses before it starts: the checks kernel overlayfs makes of its
 * directories, in its words where it has some, and one of its own (a mountpoint in a layer).
 * Lower dirs bottom first; they come back with their symlinks resolved, as the kernel follows
 * a layer given as a symlink.
 */
export async function checkDirs (lowerDirs: readonly string[], upper: { upperDir: string, workDir: string } | undefined, mountpoint: string): Promise<string[]> {
  const named: Array<[string, string]> = lowerDirs.map(d => ['lowerdir', d])
  if (upper !== undefined) named.push(['upperdir', upper.upperDir], ['workdir', upper.workDir])
  for (const [what, dir] of named) {
    if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new StrataError('NOT_FOUND', `${what} ${dir} is not a directory`)
  }
  const reals = named.map(([, dir]) => realpathSync(dir))
  // One layer twice, or one inside another.
  const lowers = reals.slice(0, lowerDirs.length)
  lowers.forEach((lower, i) => {
    for (const other of lowers.slice(i + 1)) {
      if (lower === other) throw new StrataError('BAD_REQUEST', `conflicting lowerdir path ${lower}: it is given twice`)
      if (overlapping(lower, other)) throw new StrataError('BAD_REQUEST', `overlapping lowerdir path ${lower}: it and ${other} contain one another`)
    }
  })
  if (upper !== undefined) {
    const [upperDir, workDir] = reals.slice(lowerDirs.length) as [string, string]
    if (overlapping(upperDir, workDir)) throw new StrataError('BAD_REQUEST', 'workdir and upperdir must be separate subtrees')
    // What the mount writes would show through a lower layer.
    for (const lower of lowers) {
      for (const [what, dir] of [['upperdir', upperDir], ['workdir', workDir]] as const) {
        if (lower === dir) throw new StrataError('BAD_REQUEST', `conflicting lowerdir path ${lower}: it is the ${what}`)
        if (isAtOrBelow(lower, dir)) throw new StrataError('BAD_REQUEST', `overlapping lowerdir path ${lower}: it is inside the ${what}`)
      }
    }
    // Every copy-up renames from the work dir into the upper, which fails (EXDEV) across mounts.
    const table = await readMountInfo()
    if (mountOf(upperDir, table)?.id !== mountOf(workDir, table)?.id) throw new StrataError('BAD_REQUEST', 'workdir and upperdir must reside under the same mount')
    for (const [what, dir] of [['upperdir', upper.upperDir], ['workdir', upper.workDir]] as const) {
      if (onReadOnlyFs(dir)) throw new StrataError('EROFS', `${what} ${dir} is on a read-only filesystem`)
    }
  }
  // The server reaches its layers by path: below its own mountpoint, a path would lead back into
  // the mount it serves, and the server would wait on itself. Kernel overlayfs allows this.
  const target = resolvedMountpoint(mountpoint)
  named.forEach(([what, dir], i) => {
    const real = reals[i]!
    if (target !== undefined && isAtOrBelow(target, real)) {
      throw new StrataError('BAD_REQUEST', `mountpoint ${mountpoint} ${target === real ? 'is' : 'lies inside'} the ${what} ${dir}: the server would reach its own mount through it`)
    }
  })
  return lowers
}

/** Whether one of two real paths is the other or inside it. */
function overlapping (a: string, b: string): boolean {
  return isAtOrBelow(a, b) || isAtOrBelow(b, a)
}

/** Where a mount on `path` would be, its parent's symlinks resolved; undefined when the parent is missing (the mount says so). */
function resolvedMountpoint (path: string): string | undefined {
  try {
    return join(realpathSync(dirname(path)), basename(path))
  } catch {
    return undefined
  }
}

/** access(2) answers EROFS for write access on a read-only filesystem, whoever asks. */
function onReadOnlyFs (dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK)
    return false
  } catch (err) {
    return errorCode(err) === 'EROFS'
  }
}
