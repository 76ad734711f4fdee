import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync, chmodSync, chownSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createLogger } from '../src/log.js'
import { SpareFiles } from '../src/overlay/spare-files.js'
import { SPARE_SUPPLY as SUPPLY } from '../src/overlay/copy-up.js'
import { lgetxattr, llistxattr, lsetxattr } from '../src/sys/index.js'
import { isMounted, mountStratafs, unmountFuse } from './lib/overlay-mount.js'

/**
 * Copy-ups fill empty files made ahead of time in `<workdir>/stratafs-spare` instead of
 * allocating an inode while the writer waits. What a user can see of that: copied-up files are
 * whole and keep their metadata, the supply is made again once copy-ups pause, it survives a
 * remount, and a file there that is not a pristine spare (a copy-up cut short) is never reused.
 */


async function until (what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  throw new Error(`timed out waiting until ${what}`)
}

/** Empty lower, upper, work and mount dirs, gone after the test (once nothing is mounted). */
function dirs (t: Test): { lower: string, upper: string, work: string, mnt: string } {
  const base = mkdtempSync(join(tmpdir(), 'spares-'))
  const d = { lower: join(base, 'lower'), upper: join(base, 'upper'), work: join(base, 'work'), mnt: join(base, 'mnt') }
  for (const dir of Object.values(d)) mkdirSync(dir)
  t.teardown(() => {
    unmountFuse(d.mnt)
    if (!isMounted(d.mnt)) rmSync(base, { recursive: true, force: true })
  })
  return d
}

t.test('spare files: used by copy-ups, made again when idle, kept across mounts', async t => {
  const { lower, upper, work, mnt } = dirs(t)
  const n = SUPPLY + 16
  for (let i = 0; i < n; i++) {
    writeFileSync(join(lower, `f${i}`), `content ${i}\n`)
    chownSync(join(lower, `f${i}`), 1000 + i, 2000 + i)
    chmodSync(join(lower, `f${i}`), 0o640)
  }
  const spareDir = join(work, 'stratafs-spare')
  const spares = (): string[] => readdirSync(spareDir)
  const mount = (): string => mountStratafs(t, { lowerDirs: [lower], upperDir: upper, workDir: work, mountpoint: mnt })

  mount()
  await until(`${SUPPLY} spares are made after the mount`, () => spares().length === SUPPLY)
  const before = new Set(spares())
  // A burst longer than the supply: the first copy-ups take spares, the rest make their own.
  // The last few are rewritten (O_TRUNC: a copy-up with no data), with no spare left for them.
  const rewritten = (i: number): boolean => i >= n - 4
  for (let i = 0; i < n; i++) {
    if (rewritten(i)) writeFileSync(join(mnt, `f${i}`), 'new\n')
    else appendFileSync(join(mnt, `f${i}`), 'more\n')
  }
  // Any request, not only a copy-up, keeps the server from making spares: requests
  // follow the burst at once, for ten times the pause that allows a spare.
  const until200ms = performance.now() + 200
  while (performance.now() < until200ms) lgetxattr(join(mnt, 'f0'), 'user.none')
  t.equal(spares().length, 0, 'none made while requests of other kinds keep coming')
  for (let i = 0; i < n; i++) {
    const st = lstatSync(join(upper, `f${i}`))
    t.equal(readFileSync(join(upper, `f${i}`), 'utf8'), rewritten(i) ? 'new\n' : `content ${i}\nmore\n`, `f${i}: whole content in the upper`)
    if (st.uid !== 1000 + i || st.gid !== 2000 + i || (st.mode & 0o7777) !== 0o640) {
      t.fail(`f${i}: owner ${st.uid}:${st.gid} mode ${(st.mode & 0o7777).toString(8)}`)
    }
  }
  const used = [...before].filter(name => !spares().includes(name))
  t.equal(used.length, SUPPLY, 'every spare made before the burst was used by it')
  await until('the supply is made again once requests pause', () => spares().length === SUPPLY)

  t.equal(unmountFuse(mnt), undefined, 'unmounted cleanly')
  await until('the server has exited', () => !isMounted(mnt))
  const kept = spares().sort()
  // A copy-up cut short leaves its spare filled in place: such files must not be taken again.
  writeFileSync(join(spareDir, 'partial'), 'half a copy')
  writeFileSync(join(spareDir, 'owned'), '')
  chownSync(join(spareDir, 'owned'), 1000, 1000)
  writeFileSync(join(spareDir, 'xattr'), '')
  lsetxattr(join(spareDir, 'xattr'), 'user.stale', Buffer.from('x'))
  mkdirSync(join(spareDir, 'dir'))

  mount()
  await until('the foreign files are gone', () => spares().length === SUPPLY)
  t.same(spares().sort(), kept, 'the spares of the last mount are found again, nothing else')
  for (const name of spares()) {
    const st = lstatSync(join(spareDir, name))
    if (st.size !== 0 || (st.mode & 0o7777) !== 0o600 || llistxattr(join(spareDir, name)).length !== 0) t.fail(`${name} is not a pristine spare`)
  }
  appendFileSync(join(mnt, 'f0'), 'again\n')
  t.equal(readFileSync(join(mnt, 'f0'), 'utf8'), 'content 0\nmore\nagain\n', 'the upper file is written in place')
  t.equal(readdirSync(join(work, 'work')).length, 0, 'nothing left in the work directory')
})

/** A supply of eight spares, made and then all taken by quick copy-ups, as CopyUp runs them. */
async function drained (t: Test): Promise<{ spares: SpareFiles, count: () => number }> {
  const dir = join(t.testdir(), 'spare')
  const spares = new SpareFiles(dir, 8, createLogger('silent'))
  t.teardown(() => spares.close())
  const count = (): number => readdirSync(dir).length
  spares.load()
  await until('the supply is made', () => count() === 8)
  for (let i = 0; i < 8; i++) {
    spares.begin()
    rmSync(spares.take().path)
    spares.end()
  }
  return { spares, count }
}

t.test('no spare is made while a copy-up is under way, however long it takes', async t => {
  const { spares, count } = await drained(t)
  // A long copy-up starting right after the quick ones.
  spares.begin()
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(count(), 0, 'none made during a copy-up ten times longer than the pause that allows it')
  spares.end()
  await until('made once the copy-up has ended', () => count() === 8)
  t.pass('the supply is back')
})

t.test('no spare is made while requests keep coming, and the supply is made once they pause', async t => {
  const { spares, count } = await drained(t)
  // A request every 5 ms, for ten times the pause that allows a spare.
  for (let i = 0; i < 40; i++) {
    spares.busy()
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  t.equal(count(), 0, 'none made between requests 5 ms apart')
  await until('made once requests have paused', () => count() === 8)
  t.pass('the supply is back')
})

t.test('a copy-up gives its file the lower owner, whatever group the spares got', async t => {
  const { lower, upper, work, mnt } = dirs(t)
  // A setgid work dir passes its group on to the spares made in it: they are not the server's
  // group, so a copy-up cannot take a spare's owner for granted.
  const group = 4321
  chownSync(work, 0, group)
  chmodSync(work, 0o2775)
  const owners: Array<[string, number]> = [['root-group', 0], ['work-group', group], ['other-group', 777]]
  for (const [name, gid] of owners) {
    writeFileSync(join(lower, name), `${name}\n`)
    chownSync(join(lower, name), 0, gid)
  }
  const spareDir = join(work, 'stratafs-spare')
  mountStratafs(t, { lowerDirs: [lower], upperDir: upper, workDir: work, mountpoint: mnt })
  await until('spares are made', () => readdirSync(spareDir).length === SUPPLY)
  const spareGid = lstatSync(join(spareDir, readdirSync(spareDir)[0]!)).gid
  t.equal(spareGid, group, 'the spares belong to the work dir\'s group')
  for (const [name, gid] of owners) {
    appendFileSync(join(mnt, name), 'more\n')
    const st = lstatSync(join(upper, name))
    t.same([st.uid, st.gid], [0, gid], `${name}: the lower owner in the upper`)
    t.equal(lstatSync(join(mnt, name)).gid, gid, `${name}: the lower group in the merged view`)
  }
})
