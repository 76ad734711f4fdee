import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { repoDir, runCli, startDaemon, type CliResult } from './lib/daemon.js'
import type { Tap } from './lib/tap.js'

/** Every failure: exactly one `stratafs: ...` line on stderr, no stack. */
function oneLine (t: Tap, r: CliResult, code: number, pattern: RegExp): void {
  t.equal(r.code, code, `exit ${code}`)
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${JSON.stringify(r.stderr)}`)
  t.match(r.stderr, /^stratafs: /)
  t.match(r.stderr, pattern)
}
function layerDir (base: string, name: string, files: Record<string, string>): string {
  const dir = join(base, name)
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true })
    writeFileSync(join(dir, path), content)
  }
  return dir
}

t.test('no daemon: one line naming the socket, exit 1', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'stratafs-none-'))
  t.teardown(() => rmSync(empty, { recursive: true, force: true }))
  const r = await runCli(['image', 'ls'], { root: empty })
  oneLine(t, r, 1, new RegExp(`no daemon at ${join(empty, 'stratafs.sock')} \\(start it with 'stratafs daemon'\\)`))
})

t.test('usage errors exit 2 with one line', async (t) => {
  oneLine(t, await runCli(['frobnicate'], { bare: true }), 2, /unknown command/)
  oneLine(t, await runCli(['image', 'ls', '--bogus'], { bare: true }), 2, /bogus/)
  oneLine(t, await runCli(['mount', 'onlyone'], { bare: true }), 2, /usage: stratafs mount IMG MOUNTPOINT/)
  const help = await runCli(['--help'], { bare: true })
  t.equal(help.code, 0)
  t.match(help.stdout, /image create NAME:TAG LAYER/)
})

t.test('the command starts without reading a NODE_EXTRA_CA_CERTS bundle', async (t) => {
  // Node warns on stderr when it cannot read the bundle it was given, and reads it at start-up
  // (55-70 ms for Debian's): no command makes a TLS connection.
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS=/nonexistent', join(repoDir, 'bin', 'stratafs'), '--help'], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 0, 'bin/stratafs --help')
  t.match(r.stdout, /^usage: stratafs/, 'the usage')
  t.equal(r.stderr, '', 'and nothing of certificates')
})

t.test('a second daemon on the same root is refused; the first keeps working', async (t) => {
  const d = await startDaemon(t)
  const second = await runCli(['daemon', '--root', d.root], { bare: true, timeoutMs: 20_000 })
  oneLine(t, second, 1, new RegExp(`another stratafs daemon is using ${d.root}`))
  const ls = await d.cli(['image', 'ls'])
  t.equal(ls.code, 0, 'first daemon still answers')
  t.equal(statSync(d.socket).mode & 0o777, 0o600, 'socket is mode 0600')
})

t.test('images: create, ls, history, inspect, tag, rm', async (t) => {
  const d = await startDaemon(t)
  const src = d.dir('src')
  const l1 = layerDir(src, 'l1', { 'etc/hello': 'hello\n' })
  const l2 = layerDir(src, 'l2', { 'usr/big': 'x'.repeat(1_500_000) })

  const imp = await d.cli(['layer', 'import', l1])
  t.equal(imp.code, 0, imp.stderr)
  const diff1 = imp.stdout.trim()
  t.match(diff1, /^sha256:[0-9a-f]{64}$/, 'layer import prints the DiffID')
  t.equal((await d.cli(['layer', 'import', l1])).stdout.trim(), diff1, 'a second import of the same dir dedups')

  const created = await d.cli(['image', 'create', 'app:1.0', diff1, l2, '--env', 'A=1', '--env', 'B=two', '--cmd', 'echo hi',
    '--workdir', '/srv', '--label', 'k=v', '--created-by', 'test step'])
  t.equal(created.code, 0, created.stderr)
  const id = created.stdout.trim()
  t.match(id, /^sha256:[0-9a-f]{64}$/)

  const ls = await d.cli(['image', 'ls'])
  const [header, row] = ls.stdout.trimEnd().split('\n')
  t.match(header, /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/)
  t.match(row, new RegExp(`^app\\s+1\\.0\\s+${id.slice(7, 19)}\\s+(Less than a second|1 second|\\d+ seconds) ago\\s+1\\.5\\d?MB$`))
  const lsJson = JSON.parse((await d.cli(['image', 'ls', '--json'])).stdout) as Array<Record<string, unknown>>
  t.match(lsJson, [{ Repository: 'app', Tag: '1.0', ID: id, Size: Number }])

  const hist = (await d.cli(['image', 'history', 'app:1.0'])).stdout.trimEnd().split('\n')
  t.match(hist[0], /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/)
  t.equal(hist.length, 3, 'one row per layer')
  t.match(hist[1], new RegExp(`^${id.slice(7, 19)}\\s+.* ago\\s+test step\\s+1\\.5\\d?MB`))
  t.match(hist[2], /^<missing>\s+/)
  const histRun = await d.cli(['image', 'history', 'app:1.0', '--json'])
  t.equal(histRun.code, 0, histRun.stderr)
  const histJson = JSON.parse(histRun.stdout) as unknown[]
  t.equal(histJson.length, 2)

  const inspect = JSON.parse((await d.cli(['image', 'inspect', id.slice(7, 15)])).stdout) as Array<Record<string, any>>
  t.equal(inspect.length, 1, 'an array, as docker prints it')
  const img = inspect[0]!
  t.equal(img.Id, id)
  t.same(img.RepoTags, ['app:1.0'])
  t.same(img.Config, { Env: ['A=1', 'B=two'], Cmd: ['/bin/sh', '-c', 'echo hi'], WorkingDir: '/srv', Labels: { k: 'v' } })
  t.equal(img.RootFS.Type, 'layers')
  t.equal(img.RootFS.Layers.length, 2)
  t.equal(img.RootFS.Layers[0], diff1)
  t.equal(img.GraphDriver.Name, 'stratafs')
  const lower = (img.GraphDriver.Data.LowerDir as string).split(':')
  t.equal(lower.length, 2)
  t.match(lower[1], diff1.slice(7), 'LowerDir is topmost first')
  t.equal(img.Os, 'linux')
  t.type(img.Architecture, 'string')
  t.type(img.Size, 'number')
  t.type(img.Created, 'string')

  t.equal((await d.cli(['image', 'tag', 'app:1.0', 'app:latest'])).code, 0)
  t.equal(JSON.parse((await d.cli(['image', 'inspect', 'app'])).stdout)[0].Id, id, 'a bare name is :latest')
  oneLine(t, await d.cli(['image', 'inspect', 'nosuch:1']), 1, /no such image: nosuch:1/)
  oneLine(t, await d.cli(['image', 'create', 'bad:1', 'sha256:' + '0'.repeat(64)]), 1, /no such layer/)
  oneLine(t, await d.cli(['image', 'create', 'Bad Name', l1]), 1, /invalid reference format/)

  const untag = await d.cli(['image', 'rm', 'app:latest'])
  t.equal(untag.stdout, 'Untagged: app:latest\n', 'another tag remains: only the tag goes')
  const rm = await d.cli(['image', 'rm', 'app:1.0'])
  t.match(rm.stdout, `Untagged: app:1.0\nDeleted: ${id}\n`)
  t.match(rm.stdout, /Deleted layer: sha256:/)
  t.equal((await d.cli(['image', 'ls', '--json'])).stdout.trim(), '[]')
  t.equal((await d.cli(['layer', 'ls', '--json'])).stdout.trim(), '[]', 'unused layers are deleted with the image')
})

t.test('SIGTERM stops the daemon cleanly and removes its socket', async (t) => {
  const d = await startDaemon(t)
  d.proc.kill('SIGTERM')
  const { code, signal } = await d.exited
  t.equal(code, 0, 'exit 0')
  t.equal(signal, null)
  t.match(d.logs(), /stopped/)
  oneLine(t, await d.cli(['ps']), 1, /no daemon at/)
  const again = await startDaemon(t, { root: d.root })
  t.equal((await again.cli(['ps'])).code, 0, 'a new daemon opens the same root')
})

t.test('the stale socket of a dead daemon is replaced', async (t) => {
  const d = await startDaemon(t)
  d.proc.kill('SIGKILL')
  await d.exited
  t.ok(statSync(d.socket).isSocket(), 'a killed daemon leaves its socket')
  const again = await startDaemon(t, { root: d.root })
  t.equal((await again.cli(['image', 'ls'])).code, 0, 'the new daemon listens on it')
})
