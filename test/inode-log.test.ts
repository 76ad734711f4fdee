import { spawn, spawnSync } from 'node:child_process'
import { appendFileSync, closeSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmdirSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { repoDir } from './lib/daemon.js'
import { isMounted, mountStratafs, serverPid, unmountFuse } from './lib/overlay-mount.js'
import { stackDirs } from './lib/stack-dirs.js'
import type { Tap } from './lib/tap.js'

/**
 * st_ino across a crash that left the inode log's last line unfinished. The log (one line per
 * copy-up, in the work dir) is what keeps a copied-up file's inode number across remounts; a
 * server killed while appending leaves a line cut short, or zeros where the file grew and its
 * data did not reach the disk. The next mount must neither read that tail as a mapping nor let
 * the next line join it, so that a later crash still keeps every line written after it. And
 * the unmount's rewrite of the log must reach the disk before it replaces the old one.
 */

const LOG = 'stratafs-inodes'

/** SIGKILL for the server of `mnt`, then the dead mount taken away. */
async function crash (t: Tap, mnt: string): Promise<void> {
  const pid = serverPid(mnt)
  t.match(pid, /^\d+$/, 'one server to kill')
  process.kill(Number(pid), 'SIGKILL')
  for (let i = 0; i < 500 && spawnSync('kill', ['-0', pid]).status === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
  unmountFuse(mnt)
}

/** What the crash left at the end of the log, and whether the last line written (b's) survived it. */
const tails: Array<[string, (log: string) => void, boolean]> = [
  ['a line cut short', log => truncateSync(log, statSync(log).size - 3), false],
  ['zeros', log => appendFileSync(log, Buffer.alloc(19)), true]
]

for (const [tail, leave, bKept] of tails) {
  t.test(`a crash that left ${tail} at the end of the inode log`, async t => {
    const d = stackDirs(t, 'inode-log')
    for (const name of ['a', 'b', 'c']) writeFileSync(join(d.lower, name), `${name}\n`)
    const mountpoint = join(d.lower, '..', 'mnt')
    mkdirSync(mountpoint)
    const mount = (): string => mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work, mountpoint })
    const ino = (name: string): number => lstatSync(join(mountpoint, name)).ino

    mount()
    const shown = { a: ino('a'), b: ino('b'), c: ino('c') }
    appendFileSync(join(mountpoint, 'a'), 'more\n')
    appendFileSync(join(mountpoint, 'b'), 'more\n')
    await crash(t, mountpoint)
    leave(join(d.work, LOG))

    mount()
    t.equal(ino('a'), shown.a, 'a file copied up before the crash keeps its number')
    if (bKept) {
      t.equal(ino('b'), shown.b, 'so does the one whose line was written whole')
    } else {
      // Not the number the half line would read as: a file whose line is lost shows its own.
      t.equal(ino('b'), lstatSync(join(d.upper, 'b')).ino, 'the file whose line was cut shows its upper inode\'s number')
    }
    t.equal(readFileSync(join(d.work, LOG)).at(-1), 0x0a, 'the log ends in a whole line again')
    appendFileSync(join(mountpoint, 'c'), 'more\n')
    await crash(t, mountpoint)

    mount()
    t.same([ino('a'), ino('c')], [shown.a, shown.c], 'after a second crash, the files copied up keep their numbers')
    t.equal(readFileSync(join(mountpoint, 'c'), 'utf8'), 'c\nmore\n', 'and their data')
  })
}

for (const volatile of [false, true]) {
  t.test(`the unmount's rewrite of the inode log is ${volatile ? 'not ' : ''}fsynced${volatile ? ' on a volatile mount' : ''}`, async t => {
    const d = stackDirs(t, 'inode-log-sync')
    writeFileSync(join(d.lower, 'a'), 'a\n')
    const mnt = join(d.lower, '..', 'mnt')
    mkdirSync(mnt)
    t.teardown(() => unmountFuse(mnt))
    // The server in the foreground under strace, its parent: the trace ends, whole, when it exits.
    const out = join(d.lower, '..', 'strace.out')
    const options = `lowerdir=${d.lower},upperdir=${d.upper},workdir=${d.work}${volatile ? ',volatile' : ''}`
    const server = spawn('strace', ['-f', '-y', '-e', 'trace=openat,fsync,rename,renameat,renameat2', '-o', out, 'env', '-u', 'NODE_OPTIONS', process.execPath,
      join(repoDir, 'dist', 'bundle', 'overlay-main.js'), '-f', '-o', options, mnt], { stdio: 'ignore' })
    const exited = new Promise(resolve => server.on('exit', resolve))
    for (let i = 0; i < 500 && !isMounted(mnt) && server.exitCode === null; i++) await new Promise(resolve => setTimeout(resolve, 20))
    t.ok(isMounted(mnt), 'mounted')
    appendFileSync(join(mnt, 'a'), 'more\n')
    t.equal(spawnSync('fusermount', ['-u', mnt]).status, 0, 'unmounted')
    await exited
    const trace = readFileSync(out, 'utf8')
    t.match(trace, /openat\(.*stratafs-inodes\.tmp/, 'the log was rewritten')
    const lines = trace.split('\n')
    const synced = lines.findIndex(l => /\bfsync\(\d+<[^>]*stratafs-inodes\.tmp>/.test(l))
    const renamed = lines.findIndex(l => /\brename(at2?)?\(.*stratafs-inodes\.tmp"/.test(l))
    t.ok(renamed >= 0, 'and renamed over the old one')
    if (volatile) t.equal(synced, -1, 'not fsynced')
    else t.ok(synced >= 0 && synced < renamed, 'fsynced before the rename')
  })
}

t.test('entries made in the inode numbers of removed copies (directories, files unlinked while open) show their own numbers', async t => {
  const d = stackDirs(t, 'inode-reuse')
  const dirs = Array.from({ length: 40 }, (_, i) => `d${i}`)
  for (const dir of dirs) {
    mkdirSync(join(d.lower, dir))
    writeFileSync(join(d.lower, `${dir}.txt`), 'lower\n')
  }
  const mnt = mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work })
  const freed = new Set<number>()
  for (const dir of dirs) {
    const fd = openSync(join(mnt, `${dir}.txt`), 'r+')
    freed.add(lstatSync(join(d.upper, `${dir}.txt`)).ino)
    unlinkSync(join(mnt, `${dir}.txt`))
    closeSync(fd)
  }
  dirs.forEach((dir, i) => {
    writeFileSync(join(mnt, dir, 'x'), '')
    freed.add(lstatSync(join(d.upper, dir)).ino)
    unlinkSync(join(mnt, dir, 'x'))
    // Half go by rmdir, half under a directory renamed over them.
    if (i % 2 === 0) {
      rmdirSync(join(mnt, dir))
    } else {
      mkdirSync(join(mnt, `new${i}`))
      renameSync(join(mnt, `new${i}`), join(mnt, dir))
    }
  })
  const made = dirs.flatMap((_, i) => {
    mkdirSync(join(mnt, `n${i}`))
    writeFileSync(join(mnt, `f${i}`), '')
    return [`n${i}`, `f${i}`]
  })
  // The upper filesystem hands some of the freed numbers out again (here, at least one).
  const reused = made.filter(name => freed.has(lstatSync(join(d.upper, name)).ino)).length
  t.same(made.map(name => lstatSync(join(mnt, name)).ino), made.map(name => lstatSync(join(d.upper, name)).ino),
    `new entries show their own inode numbers (${reused} of them a removed copy's), none a lower file's`)
  t.equal(unmountFuse(mnt), undefined, 'unmounted')
  // Read as a mount replays it: the server may or may not have compacted it yet.
  const mapped = new Map<number, string>()
  for (const [upper, shown] of readFileSync(join(d.work, LOG), 'utf8').split('\n').filter(Boolean).map(line => line.split(' '))) {
    if (shown === '-') mapped.delete(Number(upper))
    else mapped.set(Number(upper), shown!)
  }
  t.same([...mapped.keys()].filter(ino => freed.has(ino)), [], 'the inode log keeps no mapping of a removed copy')
})
