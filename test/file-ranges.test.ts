import { spawnSync } from 'node:child_process'
import { closeSync, lstatSync, openSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { errorCode } from '../src/errors.js'
import { copyRange, lseek, SEEK_DATA, SEEK_HOLE } from '../src/sys/index.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs } from './lib/overlay-mount.js'
import { stackDirs, type StackDirs } from './lib/stack-dirs.js'

/**
 * fallocate(2), lseek's SEEK_DATA/SEEK_HOLE and copy_file_range(2) on a container, beside kernel
 * overlayfs: the `fallocate` tool preallocates, punches, zeroes and digs holes in new, copied-up
 * and lower files, a range of a lower file is copied into a new one, `cp` copies a sparse lower
 * file, and where the data and holes of each file then are must be what the kernel shows.
 */

const KiB = 1024

function layer (dir: string): void {
  // 64 KiB of data with one zeroed block in the middle, for --dig-holes to find.
  const mixed = Buffer.alloc(64 * KiB, 'm')
  mixed.fill(0, 16 * KiB, 20 * KiB)
  writeFileSync(join(dir, 'mixed'), mixed)
  writeFileSync(join(dir, 'punch'), Buffer.alloc(32 * KiB, 'p'))
  // 1 MiB hole, then data: read on the lower file itself, never copied up.
  writeFileSync(join(dir, 'sparse'), '')
  truncateSync(join(dir, 'sparse'), 1024 * KiB)
  writeFileSync(join(dir, 'sparse'), 'tail', { flag: 'a' })
}

/** The file's data extents as `start-end`, found with SEEK_DATA and SEEK_HOLE. */
function dataMap (path: string): string {
  const fd = openSync(path, 'r')
  const out: string[] = []
  try {
    for (let pos = 0; ;) {
      let start: number
      try {
        start = lseek(fd, pos, SEEK_DATA)
      } catch (err) {
        if (errorCode(err) === 'ENXIO') break
        throw err
      }
      pos = lseek(fd, start, SEEK_HOLE)
      out.push(`${start}-${pos}`)
    }
  } finally {
    closeSync(fd)
  }
  return out.join(',') || 'none'
}

function fallocate (root: string, args: string[]): string {
  const res = spawnSync('fallocate', args, { cwd: root, encoding: 'utf8' })
  return res.status === 0 ? 'ok' : res.stderr.trim().replace(/^fallocate: /, '')
}

function describe (root: string, name: string): string {
  // Before any read: ext4 counts preallocated blocks whose pages are cached as data.
  const data = dataMap(join(root, name))
  const st = lstatSync(join(root, name))
  const sum = createHash('sha256').update(readFileSync(join(root, name))).digest('hex').slice(0, 12)
  return `${name} size=${st.size} blocks=${st.blocks} data=${data} sha=${sum}`
}

/** copy_file_range from a lower file into a new one, past the source's end: the count. */
async function copyRangeOf (root: string): Promise<string> {
  const from = openSync(join(root, 'mixed'), 'r')
  const to = openSync(join(root, 'ranged'), 'w')
  try {
    return `copied ${await copyRange(from, 1000, to, 5000, 100_000)}`
  } finally {
    closeSync(from)
    closeSync(to)
  }
}

async function steps (root: string): Promise<string[]> {
  return [
    fallocate(root, ['-l', '1M', 'new']),
    fallocate(root, ['-n', '-o', '1M', '-l', '1M', 'new']),
    fallocate(root, ['-p', '-o', '8K', '-l', '8K', 'punch']),
    fallocate(root, ['-z', '-o', '0', '-l', '4K', 'punch']),
    await copyRangeOf(root),
    spawnSync('cp', ['sparse', 'sparse-copy'], { cwd: root }).status === 0 ? 'cp ok' : 'cp failed',
    fallocate(root, ['-d', 'mixed']),
    ...['new', 'punch', 'mixed', 'sparse', 'ranged', 'sparse-copy'].map((name) => describe(root, name))
  ]
}

t.test('fallocate, SEEK_DATA/SEEK_HOLE and copy_file_range as on kernel overlayfs', async t => {
  const outcomes = async (mount: (d: StackDirs) => string): Promise<string[]> => {
    const d = stackDirs(t, 'falloc')
    layer(d.lower)
    return await steps(mount(d))
  }
  const ours = await outcomes(d => mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work }))
  const kernel = await outcomes(d => mountKernelOverlay(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work }))
  t.comment(ours.join('\n'))
  t.same(ours, kernel, 'every step, and each file\'s size, blocks, data extents and contents, as on kernel overlayfs')
  t.same(ours.slice(0, 7), ['ok', 'ok', 'ok', 'ok', 'copied 64536', 'cp ok', 'ok'], 'every step succeeded, the copy short at the end of its source')
  t.match(ours[7], /^new size=1048576 blocks=4096 /, 'preallocation, and more kept past the end')
  t.match(ours[9], /^mixed size=65536 blocks=120 data=0-16384,20480-65536 /, 'the zero block of a lower file, copied up, dug out')
  t.match(ours[10], /^sparse size=1048580 .* data=1048576-1048580 /, 'a lower file\'s hole, seen through the mount')
  t.match(ours[11], /^ranged size=69536 /, 'the range landed at its offset')
})
