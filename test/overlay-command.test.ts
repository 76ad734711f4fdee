import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { repoDir } from './lib/daemon.js'
import { isMounted, serverPid, unmountFuse } from './lib/overlay-mount.js'
import { mountTmpfs } from './lib/tmpfs.js'
import type { Tap } from './lib/tap.js'

/**
 * `stratafs overlay` / `stratafs-overlay` as podman and mount(8) call it: plain directories, no
 * daemon, fuse-overlayfs's command line, back in the foreground only once the mount answers.
 */

const overlayMain = join(repoDir, 'dist', 'bundle', 'overlay-main.js')
const bin = join(repoDir, 'bin', 'stratafs-overlay')
// tap puts its loader hooks back into NODE_OPTIONS of every child it spawns; `env -u` takes them
// out again, as a mount helper run by mount(8) has none.
const bare = (cmd: string, args: string[]): ReturnType<typeof spawnSync> =>
  spawnSync('env', ['-u', 'NODE_OPTIONS', cmd, ...args], { encoding: 'utf8', timeout: 30_000 })

function layers (t: Tap): { base: string, lower: string, upper: string, work: string, mnt: string } {
  const base = mkdtempSync(join(tmpdir(), 'sovcmd-'))
  const dirs = { base, lower: join(base, 'l1'), upper: join(base, 'u'), work: join(base, 'w'), mnt: join(base, 'mnt') }
  for (const d of [dirs.lower, dirs.upper, dirs.work, dirs.mnt]) mkdirSync(d)
  writeFileSync(join(dirs.lower, 'hello'), 'hello\n')
  t.teardown(() => {
    unmountFuse(dirs.mnt)
    if (!isMounted(dirs.mnt)) rmSync(base, { recursive: true, force: true })
  })
  return dirs
}

t.test('podman style: returns once mounted, holds none of its stdio, reports what it ignores', async t => {
  const d = layers(t)
  // spawnSync waits for the pipes to close: a background server holding them would hang it.
  const r = bare(process.execPath, [overlayMain, '-o', `lowerdir=${d.lower},upperdir=${d.upper},workdir=${d.work},,volatile,noacl`, d.mnt])
  t.equal(r.status, 0, `exit 0: ${String(r.stderr)}`)
  t.equal(String(r.stderr), 'stratafs-overlay: ignoring options: noacl\n', 'says which options it ignores (volatile it takes)')
  t.ok(isMounted(d.mnt), 'mounted when the command returns')
  t.equal(readFileSync(join(d.mnt, 'hello'), 'utf8'), 'hello\n', 'the lower shows')
  writeFileSync(join(d.mnt, 'new'), 'x')
  t.equal(readFileSync(join(d.upper, 'new'), 'utf8'), 'x', 'writes land in the upper')
  t.equal(spawnSync('fusermount', ['-u', d.mnt]).status, 0, 'fusermount -u ends it')
  t.notOk(isMounted(d.mnt), 'unmounted')
  let alive = true
  for (let i = 0; i < 50 && alive; i++) {
    alive = serverPid(d.mnt) !== ''
    if (alive) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.notOk(alive, 'and its server process exits')
})

t.test('mount(8) through mount.fuse, in the SOURCE MOUNTPOINT -o OPTIONS order', async t => {
  const d = layers(t)
  const r = bare('mount', ['-t', 'fuse', `${bin}#overlay`, d.mnt, '-o', `lowerdir=${d.lower}`])
  t.equal(r.status, 0, `mount exit 0: ${String(r.stderr)}`)
  t.equal(readFileSync(join(d.mnt, 'hello'), 'utf8'), 'hello\n', 'the lower shows')
  t.throws(() => writeFileSync(join(d.mnt, 'x'), 'x'), { code: 'EROFS' }, 'no upper: read-only')
  t.equal(spawnSync('umount', [d.mnt]).status, 0, 'umount ends it')
})

t.test('bad command lines give one clear line and no mount', async t => {
  const d = layers(t)
  mkdirSync(join(d.upper, 'w'))
  const cases: Array<[string[], RegExp, number]> = [
    [['-o', `upperdir=${d.upper},workdir=${d.work}`, d.mnt], /lowerdir= is required/, 2],
    [['-o', `lowerdir=${d.lower},upperdir=${d.upper}`, d.mnt], /go together/, 2],
    [['-o', `lowerdir=${d.lower},bogus=1`, d.mnt], /unknown option bogus/, 2],
    [['-o', `lowerdir=${d.lower},upperdir=${d.upper},workdir=${join(d.upper, 'w')}`, d.mnt], /workdir and upperdir must be separate subtrees/, 1],
    [['-o', `lowerdir=${d.lower},upperdir=${d.upper},workdir=${d.work},userxattr,metacopy=on`, d.mnt], /conflicting options: userxattr,metacopy=on/, 2],
    [['-o', `lowerdir=${join(d.base, 'missing')}`, d.mnt], /is not a directory/, 1],
    [['-o', `lowerdir=${d.lower}`, join(d.base, 'nomnt')], /./, 1]
  ]
  // Both ways in: the launcher podman and mount(8) run, whose server tells it what failed, and
  // the Node command, which checks the command line before handing it on.
  const entries: Array<[string, string[]]> = [['launcher', [bin]], ['node', [process.execPath, overlayMain]]]
  for (const [args, message, code] of cases) {
    for (const [how, [cmd, ...pre]] of entries) {
      const r = bare(cmd!, [...pre, ...args])
      t.equal(r.status, code, `${how} ${args.join(' ')}: exit ${code}`)
      t.match(String(r.stderr), message)
      t.ok(String(r.stderr).trim().split('\n').length <= 2, 'a short message, no stack')
      t.notOk(isMounted(d.mnt), 'nothing mounted')
    }
  }
})

/** A tmpfs mounted at `dir` (made), holding the directories `subdirs`; unmounted after the test. */
/** `dir`, in which the directories `subdirs` were made. */
function withDirs (dir: string, subdirs: string[]): string {
  for (const sub of subdirs) mkdirSync(join(dir, sub))
  return dir
}

/** Kernel overlayfs refuses `options`, and so do both ways into stratafs-overlay, in one line. */
function refusedAsByKernel (t: Tap, mnt: string, options: string, message: RegExp): void {
  const kernel = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', options, mnt])
  if (kernel.status === 0) spawnSync('umount', [mnt])
  t.not(kernel.status, 0, 'kernel overlayfs refuses it')
  for (const [cmd, ...pre] of [[bin], [process.execPath, overlayMain]]) {
    const r = bare(cmd!, [...pre, '-o', options, mnt])
    t.equal(r.status, 1, `${cmd}: exit 1`)
    t.match(String(r.stderr), message, 'one line saying why')
    t.notOk(isMounted(mnt), 'nothing mounted')
  }
}

t.test('an upper on a read-only filesystem is refused, as the kernel refuses it', async t => {
  const d = layers(t)
  // Made read-only once the upper and work dirs are in it.
  const ro = withDirs(mountTmpfs(t, { dir: join(d.base, 'ro') }), ['u', 'w'])
  t.equal(spawnSync('mount', ['-o', 'remount,ro', ro]).status, 0, 'made read-only')
  refusedAsByKernel(t, d.mnt, `lowerdir=${d.lower},upperdir=${join(ro, 'u')},workdir=${join(ro, 'w')}`,
    /^stratafs-overlay: upperdir \S+ is on a read-only filesystem\n$/)
})

t.test('an upper and a work dir on different mounts are refused, as the kernel refuses them', async t => {
  const d = layers(t)
  // The upper on a tmpfs, the work dir where the test's temp dirs are.
  const other = withDirs(mountTmpfs(t, { dir: join(d.base, 'other') }), ['u'])
  refusedAsByKernel(t, d.mnt, `lowerdir=${d.lower},upperdir=${join(other, 'u')},workdir=${d.work}`,
    /^stratafs-overlay: workdir and upperdir must reside under the same mount\n$/)
})

t.test('a lower dir that is, or is inside, the upper, the work dir or another lower dir is refused, as the kernel refuses it', async t => {
  const d = layers(t)
  mkdirSync(join(d.upper, 'inner'))
  const cases: Array<[string, RegExp]> = [
    [d.upper, /^stratafs-overlay: conflicting lowerdir path \S+: it is the upperdir\n$/],
    [join(d.upper, 'inner'), /^stratafs-overlay: overlapping lowerdir path \S+: it is inside the upperdir\n$/],
    [d.work, /^stratafs-overlay: conflicting lowerdir path \S+: it is the workdir\n$/]
  ]
  for (const [lower, message] of cases) {
    refusedAsByKernel(t, d.mnt, `lowerdir=${d.lower}:${lower},upperdir=${d.upper},workdir=${d.work}`, message)
  }
  // One layer twice, or one inside another.
  mkdirSync(join(d.lower, 'sub'))
  const lowers: Array<[string, RegExp]> = [
    [`${d.lower}:${d.lower}`, /^stratafs-overlay: conflicting lowerdir path \S+: it is given twice\n$/],
    [`${d.lower}:${join(d.lower, 'sub')}`, /^stratafs-overlay: overlapping lowerdir path \S+: it and \S+ contain one another\n$/],
    // The root contains every other path, though no other path starts with '//'.
    [`${d.lower}:/`, /^stratafs-overlay: overlapping lowerdir path \/: it and \S+ contain one another\n$/]
  ]
  for (const [lowerdir, message] of lowers) refusedAsByKernel(t, d.mnt, `lowerdir=${lowerdir}`, message)
})

t.test('a mountpoint in a lower, upper or work dir is refused: the server would wait on its own mount', async t => {
  const d = layers(t)
  // Kernel overlayfs allows it; stratafs reaches its layers by path, and a path below its own
  // mountpoint leads back into the mount it serves (a copy-up there hung the server).
  for (const [what, dir] of [['lowerdir', d.lower], ['upperdir', d.upper], ['workdir', d.work]]) {
    const mnt = join(dir!, 'mnt')
    mkdirSync(mnt)
    for (const [how, target] of [['inside', mnt], ['equal to', dir!]]) {
      // Lazily: a mount there, if one came about, may be a server waiting on itself.
      t.teardown(() => { if (isMounted(target!)) spawnSync('umount', ['-l', target!]) })
      const r = bare(bin, ['-o', `lowerdir=${d.lower},upperdir=${d.upper},workdir=${d.work}`, target!])
      t.equal(r.status, 1, `a mountpoint ${how} the ${what}: exit 1`)
      t.match(String(r.stderr), new RegExp(`^stratafs-overlay: mountpoint \\S+ (is|lies inside) the ${what} \\S+: the server would reach its own mount through it\n$`), 'one line saying why')
      t.notOk(isMounted(target!), 'nothing mounted')
    }
  }
})

t.test('one upper or work dir serves one mount: a second waits for the first to end, then refuses', async t => {
  const d = layers(t)
  const other = join(d.base, 'other')
  const mnt2 = join(d.base, 'mnt2')
  for (const dir of [other, mnt2]) mkdirSync(dir)
  t.teardown(() => unmountFuse(mnt2))
  const mount = (upper: string, work: string, mnt: string): ReturnType<typeof spawnSync> =>
    bare(bin, ['-o', `lowerdir=${d.lower},upperdir=${upper},workdir=${work}`, mnt])
  t.equal(mount(d.upper, d.work, d.mnt).status, 0, 'the first mounts')
  for (const [upper, work, busy] of [[d.upper, d.work, 'upperdir'], [other, d.work, 'workdir']] as const) {
    const started = Date.now()
    const r = mount(upper, work, mnt2)
    t.equal(r.status, 1, `the same ${busy}: refused`)
    t.match(String(r.stderr), new RegExp(`^stratafs-overlay: ${busy} \\S+ is in use by another mount\n$`), 'one line saying why')
    t.ok(Date.now() - started >= 4000, 'after waiting for the first to end')
    t.notOk(isMounted(mnt2), 'nothing mounted')
  }
  writeFileSync(join(d.mnt, 'hello'), 'still served\n')
  t.equal(readFileSync(join(d.upper, 'hello'), 'utf8'), 'still served\n', 'the first mount is untouched and still serves')
  // podman unmounts a container and may mount it again at once, before the first server has exited.
  t.equal(spawnSync('umount', [d.mnt]).status, 0, 'the first unmounted')
  t.equal(mount(d.upper, d.work, d.mnt).status, 0, 'mounting the same dirs again right away waits for its server, then works')
  t.equal(readFileSync(join(d.mnt, 'hello'), 'utf8'), 'still served\n', 'with the first mount\'s changes')
})

t.test('the server starts without reading a NODE_EXTRA_CA_CERTS bundle', async t => {
  const d = layers(t)
  // Node warns on stderr when it cannot read the bundle it was given, and reads it at start-up
  // (55-70 ms for Debian's): the server, which makes no TLS connection, must not be given it.
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS=/nonexistent', bin, '-f', '-o', `lowerdir=${join(d.base, 'missing')}`, d.mnt], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 1, 'the server ran and refused the missing lower dir')
  t.equal(r.stderr, `stratafs-overlay: lowerdir ${join(d.base, 'missing')} is not a directory\n`, 'and said nothing of certificates')
})

t.test('on a terminal, the server logs readable lines', async t => {
  const d = layers(t)
  // script(1) gives the server a terminal. Its pretty-printer used to run in a worker loaded by a
  // file path, which the bundled server does not have.
  const out = join(d.base, 'terminal')
  const server = spawn('script', ['-qc', `env -u NODE_OPTIONS ${bin} -f -o lowerdir=${d.lower} ${d.mnt}`, out], { stdio: 'ignore' })
  const exited = new Promise(resolve => server.on('exit', resolve))
  for (let i = 0; i < 300 && !isMounted(d.mnt) && server.exitCode === null; i++) await new Promise(resolve => setTimeout(resolve, 20))
  t.ok(isMounted(d.mnt), 'mounted')
  t.equal(spawnSync('fusermount', ['-u', d.mnt]).status, 0, 'unmounted')
  await exited
  const said = readFileSync(out, 'utf8')
  t.match(said, /INFO.*: .*mounted/, 'an INFO line saying it mounted')
  t.notMatch(said, /"level":/, 'not JSON')
})

t.test('the launcher says so when its server dies before answering', async t => {
  const d = layers(t)
  // Everything the launcher runs but node: the server cannot even start.
  const path = join(d.base, 'path')
  mkdirSync(path)
  for (const tool of ['sh', 'dirname', 'readlink', 'mktemp', 'mkfifo', 'setsid', 'cat', 'rm']) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim()
    symlinkSync(found, join(path, tool))
  }
  const r = spawnSync(bin, ['-o', `lowerdir=${d.lower}`, d.mnt], { encoding: 'utf8', timeout: 30_000, env: { PATH: path } })
  t.equal(r.status, 127, 'the status of the server that could not start')
  t.match(r.stderr, /^stratafs-overlay: the server exited \(127\) before the mount answered\n$/)
  t.notOk(isMounted(d.mnt), 'nothing mounted')
})
