import { readFile } from 'node:fs/promises'

export interface MountInfo { mountpoint: string; fstype: string; source: string }

const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))

/**
 * The kernel's mount table for this process. Reading it never touches a mounted filesystem, so
 * it is how the daemon learns about mounts, its own included, without risking a self-deadlock.
 */
export async function readMountInfo (): Promise<MountInfo[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8')
  const out: MountInfo[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const fields = line.split(' ')
    const sep = fields.indexOf('-')
    out.push({ mountpoint: unescape(fields[4]!), fstype: fields[sep + 1]!, source: unescape(fields[sep + 2] ?? '') })
  }
  return out
}

/** Whether `path` is `dir` or below it; both absolute and normalized. */
export function isAtOrBelow (path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === '/' ? '/' : dir + '/')
}
