import { createWriteStream, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import t from 'tap'
import { HashingStream } from '../src/layers/digest.js'
import type { LayerEntry } from '../src/layers/entry.js'
import { importLayer } from '../src/layers/import.js'
import { scanLayer } from '../src/layers/scan.js'
import { layerTar } from '../src/layers/tar-writer.js'
import { OverlayXattrs } from '../src/layers/overlay-xattrs.js'
import { lgetxattr, llistxattr } from '../src/sys/index.js'
import { buildLayer, type LayerSpec } from './lib/layer-builder.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { buildTar } from './lib/tar-fixtures.js'

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex')

/** A layer as a user would hand it over: OCI-form markers, every node type, awkward attributes. */
const SPEC: LayerSpec = [
  { type: 'dir', path: 'etc', mode: 0o755, mtime: [1_600_000_000, 1] },
  { type: 'file', path: 'etc/hosts', content: '127.0.0.1 localhost\n', mtime: [1_650_000_000, 999_999_999] },
  { type: 'file', path: 'bin/su', content: 'su', mode: 0o4755 },
  { type: 'file', path: 'bin/ping', content: 'ping', mode: 0o755, xattrs: { 'security.capability': CAP, 'user.note': 'hi' } },
  { type: 'hardlink', path: 'bin/su2', target: 'bin/su' },
  { type: 'dir', path: 'tmp', mode: 0o1777 },
  { type: 'dir', path: 'home/u', uid: 1000, gid: 1000, mode: 0o700, xattrs: { 'trusted.mark': 'x' } },
  // A nested overlay's marker, escaped as kernel overlayfs stores a user's trusted.overlay.* xattr.
  { type: 'dir', path: 'srv/lower', xattrs: { 'trusted.overlay.overlay.opaque': 'y' } },
  { type: 'file', path: 'home/u/.profile', content: 'export A=1\n', uid: 1000, gid: 1000, mode: 0o644 },
  { type: 'symlink', path: 'home/u/link', target: '/etc/hosts', uid: 1000, gid: 1000 },
  { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
  { type: 'block', path: 'dev/loop0', major: 7, minor: 0, mode: 0o660 },
  { type: 'fifo', path: 'run/fifo' },
  { type: 'dir', path: 'var/cache', opaque: 'oci' },
  { type: 'file', path: 'var/cache/new', content: 'n' },
  { type: 'whiteout', path: 'etc/motd', form: 'oci' },
  { type: 'whiteout', path: 'etc/issue', form: 'kernel' },
  { type: 'file', path: `long/${'x'.repeat(150)}/${'y'.repeat(120)}`, content: 'long' }
]

async function digestOf (dir: string): Promise<string> {
  const h = new HashingStream()
  await pipeline(layerTar(dir), h, new Writable({ write (_c, _e, cb) { cb() } }))
  return h.digest()
}

/**
 * Everything a layer is made of, per path, layer root left out (a tar has no entry for it).
 * Opaqueness is compared through the scan, which reads both marker forms.
 */
function describe (dir: string): string[] {
  return [...scanLayer(dir)].filter((e) => e.path !== '/').map((e: LayerEntry) => {
    const a = e.attr
    const xattrs = e.whiteout === true
      ? []
      : llistxattr(join(dir, e.path)).filter((n) => !OverlayXattrs.trusted.isPrivate(n)).sort().map((n) => `${n}=${lgetxattr(join(dir, e.path), n)?.toString('hex') ?? ''}`)
    const data = (a.mode & 0o170000) === 0o100000 ? readFileSync(join(dir, e.path)).toString('hex') : ''
    return JSON.stringify([e.path, a.mode, a.uid, a.gid, a.size, a.rdev, a.nlink, a.mtime, e.whiteout, e.opaque, e.target, xattrs, data])
  })
}

t.test('a directory import is a faithful copy in kernel form, its DiffID that of its layer tar', async (t) => {
  const base = t.testdir()
  const src = join(base, 'src')
  buildLayer(src, SPEC)
  const progress: Array<[number, number | undefined]> = []
  const a = await importLayer(src, join(base, 'tmp'), { onProgress: (d, total) => progress.push([d, total]) })
  t.match(a.diffId, /^sha256:[0-9a-f]{64}$/)
  t.equal(a.diffId, await digestOf(a.dir), 'DiffID is the sha256 of layerTar(copy)')
  t.same(progress[progress.length - 1], [progress[0][1], progress[0][1]], 'progress ends at the total')
  t.same(readdirSync(join(a.dir, 'etc')).sort(), ['hosts', 'issue', 'motd'], 'OCI whiteout turned into a device, marker gone')
  t.equal(lgetxattr(join(a.dir, 'var/cache'), 'trusted.overlay.opaque')?.toString(), 'y')
  t.same(readdirSync(join(a.dir, 'var/cache')), ['new'])
  t.same(describe(a.dir), describe(src), 'same scan as the source (markers compare as whiteouts/opaque)')

  const again = await importLayer(src, join(base, 'tmp'))
  t.equal(again.diffId, a.diffId, 'same content twice, same DiffID')
  t.not(again.dir, a.dir)
  const ofCopy = await importLayer(a.dir, join(base, 'tmp'))
  t.equal(ofCopy.diffId, a.diffId, 'kernel-form copy imports to the same DiffID as the OCI-form source')
})

t.test('layerTar → tar import round trip: same DiffID, identical scan, also gzipped', async (t) => {
  const base = t.testdir()
  const src = join(base, 'src')
  buildLayer(src, SPEC)
  const dirImport = await importLayer(src, join(base, 'tmp'))
  const tarPath = join(base, 'layer.tar')
  await pipeline(layerTar(dirImport.dir), createWriteStream(tarPath))
  const gzPath = join(base, 'layer.tar.gz')
  await pipeline(layerTar(dirImport.dir), createGzip(), createWriteStream(gzPath))

  const progress: Array<[number, number | undefined]> = []
  const fromTar = await importLayer(tarPath, join(base, 'tmp'), { onProgress: (d, total) => progress.push([d, total]) })
  t.equal(fromTar.diffId, dirImport.diffId)
  t.equal(fromTar.size, dirImport.size)
  t.same(progress[progress.length - 1], [fromTar.size, fromTar.size], 'tar progress in file bytes')
  t.same(describe(fromTar.dir), describe(dirImport.dir), 'identical scan after the round trip')
  const fromGz = await importLayer(gzPath, join(base, 'tmp'))
  t.equal(fromGz.diffId, dirImport.diffId, 'DiffID is of the uncompressed stream')
  t.same(describe(fromGz.dir), describe(dirImport.dir))
})

t.test('the layer tar is plain OCI: whiteouts and opaque markers as .wh. files, no overlay xattrs of its own', async (t) => {
  const base = t.testdir()
  buildLayer(join(base, 'src'), SPEC)
  const { dir } = await importLayer(join(base, 'src'), join(base, 'tmp'))
  const chunks: Buffer[] = []
  await pipeline(layerTar(dir), new Writable({ write (c: Buffer, _e, cb) { chunks.push(c); cb() } }))
  const text = Buffer.concat(chunks).toString('latin1')
  t.match(text, 'etc/.wh.motd')
  t.match(text, 'etc/.wh.issue')
  t.match(text, 'var/cache/.wh..wh..opq')
  t.notMatch(text, 'trusted.overlay.opaque')
  t.match(text, 'SCHILY.xattr.user.note=hi')
  t.match(text, 'SCHILY.xattr.trusted.overlay.overlay.opaque=y', 'an escaped trusted.overlay.* xattr is content: it travels')
})

t.test('kernel overlayfs takes an imported layer as a lowerdir', async (t) => {
  const base = t.testdir()
  buildLayer(join(base, 'lower'), [
    { type: 'file', path: 'etc/motd', content: 'hello' },
    { type: 'file', path: 'etc/issue', content: 'debian' },
    { type: 'file', path: 'var/cache/old', content: 'o' }
  ])
  buildLayer(join(base, 'src'), SPEC)
  const { dir } = await importLayer(join(base, 'src'), join(base, 'tmp'))
  const mnt = mountKernelOverlay(t, { lowerDirs: [dir, join(base, 'lower')] })
  t.same(readdirSync(join(mnt, 'etc')).sort(), ['hosts'], 'both whiteouts hide the lower files')
  t.same(readdirSync(join(mnt, 'var/cache')), ['new'], 'opaque dir hides the lower contents')
})

t.test('a failed import leaves nothing staged', async (t) => {
  const base = t.testdir()
  const bad = join(base, 'bad.tar')
  writeFileSync(bad, await buildTar([{ name: 'ok', body: 'x' }, { name: '../escape', body: 'y' }]))
  await t.rejects(importLayer(bad, join(base, 'tmp')), { code: 'UNSAFE_PATH' })
  t.same(readdirSync(join(base, 'tmp')), [], 'staging dir removed')
  t.notOk(existsSync(join(base, 'escape')))
  await t.rejects(importLayer(join(base, 'missing'), join(base, 'tmp')), { code: 'NOT_FOUND' })
})
