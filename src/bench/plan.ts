/** How big and how many: one plan per run length. */
export interface BenchPlan {
  name: 'full' | 'quick' | 'tiny'
  rounds: number
  /** Copy-up file sizes in bytes and how many lower files of each size one round writes to. */
  copyUp: Array<{ size: number; files: number }>
  /** Lower files one round chmods, and their size. */
  chmod: { size: number; files: number }
  /** Stack depths for the lookup workload and the paths stat'ed per pass. */
  depths: number[]
  statPaths: number
  /** Entries of the merged directory, and the layers they are spread over. */
  readdir: { entries: number; layers: number }
  /** Bytes of the sequential read and write. */
  streamBytes: number
  churnFiles: number
  treeFiles: number
}

const KiB = 1024
const MiB = 1024 * KiB

export const plans: Record<BenchPlan['name'], BenchPlan> = {
  full: {
    name: 'full',
    rounds: 3,
    copyUp: [
      { size: 4 * KiB, files: 100 },
      { size: 1 * MiB, files: 30 },
      { size: 64 * MiB, files: 3 },
      { size: 256 * MiB, files: 2 }
    ],
    chmod: { size: 256 * MiB, files: 3 },
    depths: [1, 16, 64, 128],
    statPaths: 10_000,
    readdir: { entries: 10_000, layers: 8 },
    streamBytes: 256 * MiB,
    churnFiles: 5_000,
    treeFiles: 20_000
  },
  quick: {
    name: 'quick',
    rounds: 2,
    copyUp: [
      { size: 4 * KiB, files: 50 },
      { size: 1 * MiB, files: 10 },
      { size: 16 * MiB, files: 2 }
    ],
    chmod: { size: 16 * MiB, files: 2 },
    depths: [1, 16, 64],
    statPaths: 3_000,
    readdir: { entries: 3_000, layers: 8 },
    streamBytes: 64 * MiB,
    churnFiles: 1_000,
    treeFiles: 5_000
  },
  tiny: {
    name: 'tiny',
    rounds: 1,
    copyUp: [
      { size: 4 * KiB, files: 5 },
      { size: 64 * KiB, files: 2 }
    ],
    chmod: { size: 64 * KiB, files: 2 },
    depths: [1, 4],
    statPaths: 300,
    readdir: { entries: 200, layers: 3 },
    streamBytes: 1 * MiB,
    churnFiles: 20,
    treeFiles: 100
  }
}

export function sizeLabel (bytes: number): string {
  if (bytes >= MiB) return `${bytes / MiB} MiB`
  return `${bytes / KiB} KiB`
}
