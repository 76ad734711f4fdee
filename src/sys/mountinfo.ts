import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'

export interface MountInfo { id: number; mountpoint: string; fstype: string; source: string }

const MOUNTINFO = '/proc/self/mountinfo'

const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))

/**
 * The kernel's mount table for this process. Reading it never touches a mounted filesystem, so
 * it is how the daemon learns about mounts, its own included, without risking a self-deadlock.
 */
export async function readMountInfo (): Promise<MountInfo[]> {
  return parse(await readFile(MOUNTINFO, 'utf8'))
}

/** readMountInfo for callers with nothing else to do meanwhile. */
export function readMountInfoSync (): MountInfo[] {
  return parse(readFileSync(MOUNTINFO, 'utf8'))
}

function parse (text: string): MountInfo[] {
  const out: MountInfo[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const fields = line.split(' ')
    const sep = fields.indexOf('-')
    out.push({ id: Number(fields[0]), mountpoint: unescape(fields[4]!), fstype: fields[sep + 1]!, source: unescape(fields[sep + 2] ?? '') })
  }
  return out
}

/** Whether `path` is `dir` or below it; both absolute and normalized. */
export function isAtOrBelow (path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : dir + '/')
}

/**
 * The mount that `path` (absolute, symlinks resolved) lies in: the deepest mountpoint above it,
 * and of several on one mountpoint the last, which hides the others.
 */
export function mountOf (path: string, table: readonly MountInfo[]): MountInfo | undefined {
  let found: MountInfo | undefined
  for (const m of table) {
    if (isAtOrBelow(path, m.mountpoint) && (found === undefined || m.mountpoint.length >= found.mountpoint.length)) found = m
  }
  return found
}
