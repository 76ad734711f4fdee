import { appendFileSync, chmodSync, closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { SPARE_SUPPLY } from '../src/overlay/copy-up.js'
import { InodeMap } from '../src/overlay/inode-map.js'
import { createLogger } from '../src/log.js'
import { errorCode } from '../src/errors.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs } from './lib/overlay-mount.js'
import { mountTmpfs } from './lib/tmpfs.js'
import type { Tap } from './lib/tap.js'

/**
 * A full upper filesystem. A copy-up that does not fit fails with ENOSPC, as on kernel overlayfs;
 * the file shows as it was, and nothing of the failed copy keeps the space. What needs no new
 * data blocks (a metadata copy-up, rm, mkdir) still works on a full disk. Both implementations
 * run each step, with upper and work dirs on a tmpfs of 6 MiB and an 8 MiB lower file.
 */

const MiB = 1024 * 1024
const big = randomBytes(8 * MiB)

const free = (dir: string): number => {
  const st = statfsSync(dir)
  return st.bavail * st.bsize
}

/** Writes zeros into a new file under `dir` until nothing more fits. */
function fill (dir: string): void {
  const fd = openSync(join(dir, 'filler'), 'w')
  try {
    for (const chunk of [Buffer.alloc(MiB), Buffer.alloc(4096), Buffer.alloc(1)]) {
      for (;;) {
        try {
          writeSync(fd, chunk)
        } catch (err) {
          if (errorCode(err) === 'ENOSPC') break
          throw err
        }
      }
    }
  } finally {
    closeSync(fd)
  }
}

const implementations = ['kernel', 'stratafs'] as const
type Impl = typeof implementations[number]

interface Setup { mnt: string, lower: string, upper: string, work: string, room: string }

/** `before`: run on the work dir before the mount. */
function setup (t: Tap, impl: Impl, metacopy: boolean, before?: (work: string) => void): Setup {
  const lower = t.testdir({ big, small: 'small\n', d: { f: 'f\n' } })
  const room = mountTmpfs(t, { size: 6 * MiB })
  const upper = join(room, 'upper')
  const work = join(room, 'work')
  mkdirSync(upper)
  mkdirSync(work)
  before?.(work)
  const options = metacopy ? ['metacopy=on'] : []
  const mnt = impl === 'kernel'
    ? mountKernelOverlay(t, { lowerDirs: [lower], upperDir: upper, workDir: work, options })
    : mountStratafs(t, { lowerDirs: [lower], upperDir: upper, workDir: work, options })
  return { mnt, lower, upper, work, room }
}

/** What a failed write raised: its code, or 'none'. */
function appendError (path: string): string {
  try {
    appendFileSync(path, 'more\n')
    return 'none'
  } catch (err) {
    return errorCode(err) ?? String(err)
  }
}

/** What the work dir holds besides stratafs's own files (its spares are empty and take no room). */
const workLeft = (work: string): string[] => readdirSync(join(work, 'work'))

t.test('a copy-up larger than the room left fails with ENOSPC; the file shows whole, and the room is back', async t => {
  for (const impl of implementations) {
    const s = setup(t, impl, false)
    t.equal(appendError(join(s.mnt, 'big')), 'ENOSPC', `${impl}: the write fails with ENOSPC`)
    t.ok(readFileSync(join(s.mnt, 'big')).equals(big), `${impl}: the file shows its lower data, whole`)
    t.notOk(existsSync(join(s.upper, 'big')), `${impl}: no partial copy in the upper`)
    t.same(workLeft(s.work), [], `${impl}: nothing left in the work dir`)
    t.ok(free(s.room) > 5 * MiB, `${impl}: the room the copy took is free again`)
    appendFileSync(join(s.mnt, 'small'), 'more\n')
    t.equal(readFileSync(join(s.mnt, 'small'), 'utf8'), 'small\nmore\n', `${impl}: a copy-up that fits works`)
  }
})

t.test('metacopy: the data copy that does not fit fails, the metadata stays changed, and stratafs gives the room back', async t => {
  for (const impl of implementations) {
    const s = setup(t, impl, true)
    const before = lstatSync(join(s.mnt, 'big'))
    chmodSync(join(s.mnt, 'big'), 0o600)
    t.equal(appendError(join(s.mnt, 'big')), 'ENOSPC', `${impl}: the write fails with ENOSPC`)
    const after = lstatSync(join(s.mnt, 'big'))
    t.ok(readFileSync(join(s.mnt, 'big')).equals(big), `${impl}: the file shows its lower data, whole`)
    t.same([after.mode & 0o7777, after.size, after.ino], [0o600, big.length, before.ino], `${impl}: the new mode, the size and the inode number`)
    if (impl === 'stratafs') {
      // Kernel overlayfs keeps what it had copied in the upper file, so its disk stays full, and
      // the file shows the time of the failed write.
      t.ok(free(s.room) > 5 * MiB, 'stratafs: the room the copy took is free again')
      t.equal(after.mtimeMs, before.mtimeMs, 'stratafs: the time it had')
      appendFileSync(join(s.mnt, 'small'), 'more\n')
      t.equal(readFileSync(join(s.mnt, 'small'), 'utf8'), 'small\nmore\n', 'stratafs: a copy-up that fits works')
    }
  }
})

/**
 * stratafs's inode log, made to end 6 bytes before a page: on the full tmpfs its next line is
 * cut short, and must not stay half written (it would read back as another mapping).
 */
const INODE_LOG = 'stratafs-inodes'
const LOG_BYTES = 4090
const padLog = (work: string): void => {
  writeFileSync(join(work, INODE_LOG), '1 -\n'.repeat(Math.floor(LOG_BYTES / 4)) + '\n'.repeat(LOG_BYTES % 4))
}

t.test('on a full upper, a metadata copy-up, rm and mkdir still work', async t => {
  for (const impl of implementations) {
    const s = setup(t, impl, true, impl === 'stratafs' ? padLog : undefined)
    if (impl === 'stratafs') {
      // The spares are made once the mount is idle: the full disk is then met by a copy-up
      // that needs no new inode, and by the first line of the inode log, which needs a block.
      const spares = join(s.work, 'stratafs-spare')
      for (let i = 0; i < 500 && (!existsSync(spares) || readdirSync(spares).length < SPARE_SUPPLY); i++) {
        await new Promise(resolve => setTimeout(resolve, 10))
      }
    }
    const ino = lstatSync(join(s.mnt, 'big')).ino
    fill(s.room)
    t.equal(free(s.room), 0, `${impl}: the upper is full`)
    chmodSync(join(s.mnt, 'big'), 0o600)
    const st = lstatSync(join(s.mnt, 'big'))
    t.same([st.mode & 0o7777, st.ino], [0o600, ino], `${impl}: chmod works, the inode number stays`)
    rmSync(join(s.mnt, 'small'))
    t.notOk(existsSync(join(s.mnt, 'small')), `${impl}: rm of a lower file works`)
    mkdirSync(join(s.mnt, 'new'))
    t.ok(lstatSync(join(s.mnt, 'new')).isDirectory(), `${impl}: mkdir works`)
    if (impl === 'stratafs') {
      const log = readFileSync(join(s.work, INODE_LOG), 'utf8')
      t.equal(log.length, LOG_BYTES, 'stratafs: the inode log line the disk cut short is gone again')
    }
    writeFileSync(join(s.room, 'filler'), '')
    t.ok(readFileSync(join(s.mnt, 'big')).equals(big), `${impl}: the file's data is still the lower's`)
  }
})

t.test('a full upper mounts, and what needs no new data works on it', async t => {
  for (const impl of implementations) {
    // Full before the mount: stratafs then cannot open its index store (LevelDB writes as it opens).
    const s = setup(t, impl, false, work => fill(dirname(work)))
    t.equal(free(s.room), 0, `${impl}: the upper is full`)
    t.same(readdirSync(s.mnt).sort(), ['big', 'd', 'small'], `${impl}: mounted, the lower files show`)
    t.equal(appendError(join(s.mnt, 'small')), 'ENOSPC', `${impl}: a copy-up fails with ENOSPC`)
    rmSync(join(s.mnt, 'small'))
    mkdirSync(join(s.mnt, 'new'))
    t.same(readdirSync(s.mnt).sort(), ['big', 'd', 'new'], `${impl}: rm and mkdir work`)
  }
})

t.test('the inode log is the server\'s alone, also as the unmount rewrites it', async t => {
  const dir = t.testdir()
  const file = join(dir, INODE_LOG)
  const map = new InodeMap(file, createLogger('silent'), true)
  const umask = process.umask(0)
  t.teardown(() => process.umask(umask))
  map.set(10, 20)
  t.equal(lstatSync(file).mode & 0o777, 0o600, 'written by copy-ups')
  map.compact()
  t.equal(lstatSync(file).mode & 0o777, 0o600, 'rewritten at unmount')
  t.equal(readFileSync(file, 'utf8'), '10 20\n')
})
