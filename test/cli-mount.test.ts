import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { mountpoints, startDaemon, type CliResult, type Daemon } from './lib/daemon.js'
import type { Tap } from './lib/tap.js'

/**
 * Mount, umount, ps, diff, commit and rm through the CLI, against a daemon in its own process.
 * This process reads and writes through the mounts; the daemon never does.
 */

function oneLine (t: Tap, r: CliResult, pattern: RegExp): void {
  t.equal(r.code, 1, 'exit 1')
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${JSON.stringify(r.stderr)}`)
  t.match(r.stderr, /^stratafs: /)
  t.match(r.stderr, pattern)
}

async function ok (t: Tap, d: Daemon, args: string[]): Promise<string> {
  const r = await d.cli(args)
  t.equal(r.code, 0, `stratafs ${args.join(' ')} ${r.stderr.trim()}`)
  return r.stdout
}

/** A two-layer image `base:1`: /etc/hello and /etc/gone in the bottom layer, /usr/two on top. */
async function baseImage (t: Tap, d: Daemon): Promise<void> {
  const src = d.dir('src')
  mkdirSync(join(src, 'l1', 'etc'), { recursive: true })
  writeFileSync(join(src, 'l1', 'etc', 'hello'), 'hello\n')
  writeFileSync(join(src, 'l1', 'etc', 'gone'), 'soon gone\n')
  mkdirSync(join(src, 'l2', 'usr'), { recursive: true })
  writeFileSync(join(src, 'l2', 'usr', 'two'), 'two\n')
  await ok(t, d, ['image', 'create', 'base:1', join(src, 'l1'), join(src, 'l2')])
}

t.test('mountpoint validation', async (t) => {
  const d = await startDaemon(t)
  await baseImage(t, d)
  const missing = join(d.base, 'missing')
  oneLine(t, await d.cli(['mount', 'base:1', missing, '--read-only']), /mountpoint .*missing does not exist/)
  const file = join(d.dir('f'), 'file')
  writeFileSync(file, 'x')
  oneLine(t, await d.cli(['mount', 'base:1', file, '--read-only']), /is not a directory/)
  // Below the store, the daemon would reach its layers through its own mount and wait on itself.
  const inStore = join(d.root, 'inside')
  mkdirSync(inStore)
  t.teardown(() => { if (mountpoints().includes(inStore)) spawnSync('umount', ['-l', inStore]) })
  oneLine(t, await d.cli(['mount', 'base:1', inStore]), /mountpoint .*inside lies inside the store .*: the daemon would reach its own mount/)
  t.notOk(mountpoints().includes(inStore), 'nothing mounted in the store')
  oneLine(t, await d.cli(['mount', 'nosuch:1', d.dir('m'), '--read-only']), /no such image: nosuch:1/)

  const mnt = d.dir('mnt')
  await ok(t, d, ['mount', 'base:1', mnt, '--read-only'])
  t.ok(mountpoints().includes(mnt), 'mounted')
  oneLine(t, await d.cli(['mount', 'base:1', mnt, '--read-only']), /already a .*mountpoint/)
  oneLine(t, await d.cli(['mount', 'base:1', join(mnt, 'etc')]), /inside the stratafs mount/)
  oneLine(t, await d.cli(['layer', 'import', join(mnt, 'etc')]), /inside the stratafs mount/)

  // Someone else's mount (a tmpfs) is a mountpoint too.
  const other = d.dir('tmpfs')
  t.equal(spawnSync('mount', ['-t', 'tmpfs', 'none', other]).status, 0, 'tmpfs mounted')
  oneLine(t, await d.cli(['mount', 'base:1', other, '--read-only']), /already a mountpoint/)
  spawnSync('umount', [other])

  t.same(readdirSync(mnt).sort(), ['etc', 'usr'], 'the read-only mount shows both layers')
  await ok(t, d, ['umount', mnt])
  t.notOk(mountpoints().includes(mnt), 'unmounted')
  oneLine(t, await d.cli(['umount', mnt]), /neither a stratafs mountpoint nor a container/)
  t.equal((await d.cli(['ps', '--json'])).stdout.trim(), '[]', 'a read-only mount leaves no container behind')
})

t.test('container lifecycle: mount, ps, diff, umount, remount, commit, rm', async (t) => {
  const d = await startDaemon(t)
  await baseImage(t, d)
  const mnt = d.dir('mnt')
  const name = (await ok(t, d, ['mount', 'base:1', mnt, '--name', 'web'])).trim()
  t.equal(name, 'web')
  oneLine(t, await d.cli(['mount', 'base:1', d.dir('mnt2'), '--name', 'web']), /already mounted/)

  const ps = (await ok(t, d, ['ps'])).trimEnd().split('\n')
  t.match(ps[0], /^CONTAINER ID\s+IMAGE\s+NAME\s+MOUNTPOINT\s+STATUS$/)
  t.match(ps[1], new RegExp(`^[0-9a-f]{12}\\s+base:1\\s+web\\s+${mnt}\\s+mounted$`))

  writeFileSync(join(mnt, 'etc', 'hello'), 'changed\n')
  writeFileSync(join(mnt, 'etc', 'new'), 'new\n')
  rmSync(join(mnt, 'etc', 'gone'))
  mkdirSync(join(mnt, 'srv', 'app'), { recursive: true })
  writeFileSync(join(mnt, 'srv', 'app', 'x'), 'x')
  t.equal(await ok(t, d, ['diff', 'web']), [
    'C /etc', 'D /etc/gone', 'C /etc/hello', 'A /etc/new', 'A /srv', 'A /srv/app', 'A /srv/app/x'
  ].join('\n') + '\n', 'docker diff lines, sorted')

  oneLine(t, await d.cli(['rm', 'web']), /is mounted/)
  await ok(t, d, ['umount', 'web'])
  t.match(await ok(t, d, ['ps']), /web\s+-\s+unmounted/)
  await ok(t, d, ['mount', 'base:1', mnt, '--name', 'web'])
  t.equal(readFileSync(join(mnt, 'etc', 'hello'), 'utf8'), 'changed\n', 'a remount keeps the changes')
  t.notOk(existsSync(join(mnt, 'etc', 'gone')))

  const id = (await ok(t, d, ['commit', 'web', 'base:2', '--message', 'my change'])).trim()
  t.match(id, /^sha256:[0-9a-f]{64}$/)
  const img = JSON.parse(await ok(t, d, ['image', 'inspect', 'base:2']))[0]
  t.equal(img.RootFS.Layers.length, 3, 'one more layer')
  t.equal(img.Comment, 'my change')
  const hist = JSON.parse(await ok(t, d, ['image', 'history', 'base:2', '--json']))
  t.match(hist[0], { created_by: 'stratafs commit', comment: 'my change' })

  const ro = d.dir('ro')
  await ok(t, d, ['mount', 'base:2', ro, '--read-only'])
  t.equal(readFileSync(join(ro, 'etc', 'hello'), 'utf8'), 'changed\n', 'the committed image has the change')
  t.notOk(existsSync(join(ro, 'etc', 'gone')), 'and the deletion')
  t.equal(readFileSync(join(ro, 'srv', 'app', 'x'), 'utf8'), 'x')
  await ok(t, d, ['umount', ro])

  oneLine(t, await d.cli(['image', 'rm', 'base:1']), /used by container web/)
  t.equal((await ok(t, d, ['rm', '--force', 'web'])).trim(), 'web')
  t.notOk(mountpoints().includes(mnt), 'rm --force unmounted it')
  t.equal((await d.cli(['ps', '--json'])).stdout.trim(), '[]')
  t.same(readdirSync(join(d.root, 'containers')), [], 'container dirs deleted')
})

t.test('a mount someone else unmounts is released: ps says so, and it mounts again', async (t) => {
  const d = await startDaemon(t)
  await baseImage(t, d)
  const mnt = d.dir('mnt')
  await ok(t, d, ['mount', 'base:1', mnt, '--name', 'out'])
  writeFileSync(join(mnt, 'etc', 'kept'), 'kept\n')
  t.equal(spawnSync('umount', [mnt]).status, 0, 'umount(8) from outside')
  const deadline = Date.now() + 10_000
  let ps = ''
  while (Date.now() < deadline) {
    ps = await ok(t, d, ['ps'])
    if (/out\s+-\s+unmounted/.test(ps)) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.match(ps, /out\s+-\s+unmounted/, 'the daemon noticed')
  await ok(t, d, ['mount', 'base:1', mnt, '--name', 'out'])
  t.equal(readFileSync(join(mnt, 'etc', 'kept'), 'utf8'), 'kept\n', 'the upper survived')
  await ok(t, d, ['umount', 'out'])
})

t.test('SIGTERM unmounts everything; a killed daemon\'s mounts are cleared by the next one', async (t) => {
  const d = await startDaemon(t)
  await baseImage(t, d)
  const a = d.dir('a')
  await ok(t, d, ['mount', 'base:1', a, '--name', 'keep'])
  writeFileSync(join(a, 'kept'), 'yes')
  d.proc.kill('SIGTERM')
  t.equal((await d.exited).code, 0, 'exit 0')
  t.notOk(mountpoints().includes(a), 'unmounted on SIGTERM')

  const d2 = await startDaemon(t, { root: d.root })
  t.match(await ok(t, d2, ['ps']), /keep\s+-\s+unmounted/, 'the container survives, unmounted')
  await ok(t, d2, ['mount', 'base:1', a, '--name', 'keep'])
  t.equal(readFileSync(join(a, 'kept'), 'utf8'), 'yes')
  d2.proc.kill('SIGKILL')
  await d2.exited
  t.ok(mountpoints().includes(a), 'a killed daemon leaves a dead mount')

  const d3 = await startDaemon(t, { root: d.root })
  t.notOk(mountpoints().includes(a), 'the next daemon detached it')
  t.match(await ok(t, d3, ['ps']), /keep\s+-\s+unmounted/)
  await ok(t, d3, ['mount', 'base:1', a, '--name', 'keep'])
  t.equal(readFileSync(join(a, 'kept'), 'utf8'), 'yes', 'and the container mounts again')
})
