import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, lstatSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { gzipSync } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import tar from 'tar-stream'
import { cliMain, runCli, startDaemon, type CliResult, type Daemon } from './lib/daemon.js'
import { buildLayer } from './lib/layer-builder.js'

/**
 * Hostile and mistaken input through the CLI: each must end in one clear line on stderr and a
 * non-zero exit, write nothing outside the store, and leave the store working.
 */

interface TarEntry { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; linkname?: string; content?: string | Buffer }

async function makeTar (entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  pack.on('data', (c: unknown) => { chunks.push(c as Buffer) })
  const done = new Promise<void>((resolve, reject) => { pack.on('end', resolve); pack.on('error', reject) })
  for (const e of entries) {
    const type = e.type ?? 'file'
    const header = { name: e.name, type, linkname: e.linkname, mode: type === 'directory' ? 0o755 : 0o644, mtime: new Date(1_700_000_000_000) }
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => { if (err) reject(err); else resolve() }
      if (type === 'file') pack.entry(header, e.content ?? '', cb)
      else pack.entry(header, cb)
    })
  }
  pack.finalize()
  await done
  return Buffer.concat(chunks)
}

/** Every path under `dir`, relative, leaving out the LevelDB files (they change on any request). */
function listing (dir: string, skip: string[] = []): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const abs = join(d, name)
      const rel = relative(dir, abs)
      if (skip.some((s) => rel === s || rel.startsWith(s + '/'))) continue
      out.push(rel)
      if (lstatSync(abs).isDirectory()) walk(abs)
    }
  }
  walk(dir)
  return out.sort()
}

function oneClearLine (t: Test, r: CliResult, what: string, pattern?: RegExp): void {
  t.not(r.code, 0, `${what}: non-zero exit`)
  const lines = r.stderr.trim().split('\n').filter(Boolean)
  t.equal(lines.length, 1, `${what}: exactly one line on stderr, got ${JSON.stringify(r.stderr.slice(0, 600))}`)
  t.notMatch(r.stderr, /^\s+at /m, `${what}: no stack trace`)
  if (pattern !== undefined) t.match(r.stderr, pattern, `${what}: says what is wrong`)
}

async function storeStillWorks (t: Test, d: Daemon): Promise<void> {
  const dir = d.dir('good')
  buildLayer(dir, [{ type: 'file', path: 'hello', content: `${Math.random()}` }])
  const imp = await d.cli(['layer', 'import', dir])
  t.equal(imp.code, 0, `a good import still works ${imp.stderr.trim()}`)
  const ls = await d.cli(['image', 'ls'])
  t.equal(ls.code, 0, `image ls still works ${ls.stderr.trim()}`)
}

t.test('hostile and broken layer tars', async (t) => {
  const d = await startDaemon(t)
  // Targets the tars aim at live next to the store, so escaping writes would land where we look.
  const sentinel = d.dir('sentinel')
  const cases: Array<[string, () => Promise<Buffer>, RegExp?]> = [
    ['a ../ path', () => makeTar([{ name: 'ok.txt', content: 'ok' }, { name: `../../${relative(d.base, sentinel)}/dotdot`, content: 'escaped' }])],
    ['a ../ path inside a name', () => makeTar([{ name: 'a/../../escape', content: 'escaped' }])],
    ['an absolute path', () => makeTar([{ name: join(sentinel, 'absolute'), content: 'escaped' }])],
    ['a symlink written through', () => makeTar([
      { name: 'a', type: 'symlink', linkname: sentinel },
      { name: 'a/passwd', content: 'escaped' }
    ])],
    ['a hard link out of the layer', () => makeTar([{ name: 'h', type: 'link', linkname: '../../../../etc/passwd' }])],
    ['a truncated tar', async () => {
      const whole = await makeTar([{ name: 'big', content: 'x'.repeat(100_000) }])
      return whole.subarray(0, 20_000)
    }],
    ['garbage instead of gzip', async () => Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.alloc(4000, 0x5a)])],
    ['a truncated gzip', async () => {
      const whole = gzipSync(await makeTar([{ name: 'f', content: randomBytes(50_000) }]))
      return whole.subarray(0, whole.length / 2)
    }],
    ['garbage that is no tar at all', async () => Buffer.from('this is not a tar archive\n'.repeat(100))]
  ]
  for (const [what, make, pattern] of cases) {
    await t.test(what, async (t) => {
      const file = join(d.dir('tar'), 'layer.tar')
      writeFileSync(file, await make())
      const before = listing(d.base, ['root/db'])
      oneClearLine(t, await d.cli(['layer', 'import', file]), what, pattern)
      t.same(readdirSync(sentinel), [], 'nothing written into the sentinel dir')
      t.notOk(existsSync(join(d.base, 'escape')) || existsSync(join(d.root, 'escape')) || existsSync('/etc/escaped'), 'nothing escaped')
      const now = listing(d.base, ['root/db'])
      t.same(now.filter((p) => !before.includes(p)), [], 'no new files in the store or next to it')
      t.same(before.filter((p) => !now.includes(p)), [], 'nothing removed either')
      t.same(existsSync(join(d.root, 'tmp')) ? readdirSync(join(d.root, 'tmp')) : [], [], 'no staging left behind')
      await storeStillWorks(t, d)
    })
  }
})

t.test('unknown images and bad mountpoints', async (t) => {
  const d = await startDaemon(t)
  const layer = d.dir('layer')
  buildLayer(layer, [{ type: 'file', path: 'f', content: 'f' }])
  const digest = /sha256:[0-9a-f]{64}/.exec((await d.cli(['layer', 'import', layer])).stdout)?.[0]
  t.ok(digest, 'imported')
  t.equal((await d.cli(['image', 'create', 'img:1', digest!])).code, 0, 'image created')

  oneClearLine(t, await d.cli(['mount', 'nosuch:1', d.dir('mnt'), '--read-only']), 'mount of an unknown image', /nosuch/)
  oneClearLine(t, await d.cli(['image', 'inspect', 'nosuch:1']), 'inspect of an unknown image', /nosuch/)
  oneClearLine(t, await d.cli(['image', 'history', 'nosuch:1']), 'history of an unknown image', /nosuch/)
  oneClearLine(t, await d.cli(['image', 'create', 'x:1', 'sha256:' + '0'.repeat(64)]), 'image of an unknown layer')

  const missing = join(d.dir('parent'), 'does-not-exist')
  oneClearLine(t, await d.cli(['mount', 'img:1', missing, '--read-only']), 'mountpoint missing')
  const file = join(d.dir('parent'), 'a-file')
  writeFileSync(file, 'not a dir')
  oneClearLine(t, await d.cli(['mount', 'img:1', file, '--read-only']), 'mountpoint is a file')
  const mnt = d.dir('mnt')
  t.equal((await d.cli(['mount', 'img:1', mnt, '--read-only'])).code, 0, 'first mount')
  oneClearLine(t, await d.cli(['mount', 'img:1', mnt, '--read-only']), 'mountpoint already mounted')
  t.ok(existsSync(join(mnt, 'f')), 'the first mount still serves')
  oneClearLine(t, await d.cli(['umount', d.dir('not-mounted')]), 'umount of something not mounted')
  t.equal((await d.cli(['umount', mnt])).code, 0, 'umount')
  await storeStillWorks(t, d)
})

t.test('no daemon, and a second daemon on the same root', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'stratafs-none-'))
  t.teardown(() => rmSync(empty, { recursive: true, force: true }))
  oneClearLine(t, await runCli(['image', 'ls'], { root: empty, socket: join(empty, 'nobody.sock') }), 'no daemon', /daemon/i)

  const d = await startDaemon(t)
  const second = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [cliMain, 'daemon', '--root', d.root], {
      env: { ...process.env, STRATAFS_LOG: 'warn' }, stdio: ['ignore', 'ignore', 'pipe']
    })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }) })
  })
  t.not(second.code, 0, 'a second daemon on the same root exits non-zero')
  t.not(second.code, null, 'and exits by itself rather than hanging')
  t.match(second.stderr, /already|running|lock/i, `it says why: ${second.stderr.trim().slice(0, 300)}`)
  await storeStillWorks(t, d)
})
