import { lstatSync, mkdirSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { extractLayerTar } from '../src/layers/extract.js'
import { lgetxattr, lstat, major, minor } from '../src/sys/index.js'
import { buildTar, sha256Digest, streamOf, type FixtureEntry } from './lib/tar-fixtures.js'

const S_IFMT = 0o170000
const S_IFCHR = 0o020000
const S_IFBLK = 0o060000
const S_IFIFO = 0o010000

const MTIME = new Date(1_600_000_000_000)
const LONG = `deep/${'n'.repeat(120)}/${'m'.repeat(90)}.txt`

const entries: FixtureEntry[] = [
  { name: 'bin/', type: 'directory', mode: 0o755, pax: { mtime: '1500000000.5' } },
  { name: 'bin/su', body: 'su!', mode: 0o4755, uid: 0, gid: 0 },
  { name: 'bin/wall', body: 'wall', mode: 0o2755, uid: 0, gid: 5 },
  { name: 'bin/ping', body: 'ping', mode: 0o755, pax: { 'SCHILY.xattr.user.comment': 'pings', 'SCHILY.xattr.trusted.note': 'trusted value' } },
  { name: 'bin/cap', body: 'cap', mode: 0o755, pax: { 'LIBARCHIVE.xattr.security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex').toString('base64') } },
  { name: 'bin/link', type: 'link', linkname: 'bin/su' },
  { name: 'tmp/', type: 'directory', mode: 0o1777 },
  { name: 'home/user/notes', body: 'hello', mode: 0o600, uid: 1000, gid: 1000, pax: { mtime: '1700000000.123456789' } },
  { name: 'home/user/link', type: 'symlink', linkname: '../../etc/shadow', uid: 1000, gid: 1000 },
  { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
  { name: 'dev/fifo', type: 'fifo', mode: 0o644 },
  { name: 'etc/.wh.removed', body: '' },
  { name: 'etc/kernelwh', type: 'character-device', devmajor: 0, devminor: 0, mode: 0 },
  { name: 'var/', type: 'directory', mode: 0o755 },
  { name: 'var/.wh..wh..opq', body: '' },
  { name: 'var/kept', body: 'k' },
  { name: 'usr/', type: 'directory', pax: { 'SCHILY.xattr.trusted.overlay.opaque': 'y', 'SCHILY.xattr.trusted.overlay.redirect': '/elsewhere', 'SCHILY.xattr.trusted.overlay.overlay.redirect': '/nested' } },
  { name: LONG, body: 'long name' },
  { name: './', type: 'directory', mode: 0o755 },
  { name: 'replaced', body: 'first' },
  { name: 'replaced', body: 'second' }
]

t.test('extracts every entry type faithfully, whiteouts in kernel form', async (t) => {
  const dest = join(t.testdir(), 'layer')
  mkdirSync(dest)
  const tarBuf = await buildTar(entries.map((e) => ({ mtime: MTIME, ...e })))
  const progress: number[] = []
  const result = await extractLayerTar(streamOf(tarBuf), dest, { onProgress: (n) => progress.push(n) })
  t.equal(result.diffId, sha256Digest(tarBuf), 'DiffID is the sha256 of the tar bytes')
  t.equal(result.size, tarBuf.length)
  t.equal(progress[progress.length - 1], tarBuf.length, 'progress reaches the input size')

  const at = (p: string): ReturnType<typeof lstat> => lstat(join(dest, p))
  t.equal(at('bin/su').mode & 0o7777, 0o4755, 'setuid kept')
  t.equal(at('bin/wall').mode & 0o7777, 0o2755, 'setgid kept')
  t.equal(at('bin/wall').gid, 5)
  t.equal(at('tmp').mode & 0o7777, 0o1777, 'sticky kept')
  t.equal(readFileSync(join(dest, 'bin/su'), 'utf8'), 'su!')
  t.equal(at('bin/link').ino, at('bin/su').ino, 'hard link shares the inode')
  t.equal(at('bin/su').nlink, 2)
  t.equal(lgetxattr(join(dest, 'bin/ping'), 'user.comment')?.toString(), 'pings', 'user xattr')
  t.equal(lgetxattr(join(dest, 'bin/ping'), 'trusted.note')?.toString(), 'trusted value', 'trusted xattr')
  t.equal(lgetxattr(join(dest, 'bin/cap'), 'security.capability')?.toString('hex'), '0100000200200000000000000000000000000000', 'binary xattr')
  t.same(at('home/user/notes').mtime, [1_700_000_000, 123_456_789], 'nanosecond mtime from PAX')
  t.equal(at('home/user/notes').uid, 1000)
  t.equal(at('home/user/notes').mode & 0o7777, 0o600)
  t.equal(lstatSync(join(dest, 'home/user/link')).isSymbolicLink(), true)
  t.equal(lstatSync(join(dest, 'home/user/link')).uid, 1000)
  t.same(at('bin').mtime, [1_500_000_000, 500_000_000], 'directory mtime set after its contents')
  t.same(at('home/user/notes').atime, [1_700_000_000, 123_456_789], 'atime defaults to mtime')
  const nul = at('dev/null')
  t.equal(nul.mode & S_IFMT, S_IFCHR)
  t.same([major(nul.rdev), minor(nul.rdev)], [1, 3])
  t.equal(nul.mode & 0o7777, 0o666)
  const sda = at('dev/sda')
  t.equal(sda.mode & S_IFMT, S_IFBLK)
  t.same([major(sda.rdev), minor(sda.rdev)], [8, 0])
  t.equal(at('dev/fifo').mode & S_IFMT, S_IFIFO)
  const wh = at('etc/removed')
  t.equal(wh.mode & S_IFMT, S_IFCHR, 'OCI whiteout became a char device')
  t.equal(wh.rdev, 0)
  t.equal(at('etc/kernelwh').rdev, 0, 'kernel whiteout stays')
  t.same(readdirSync(join(dest, 'etc')).sort(), ['kernelwh', 'removed'], 'no marker files left')
  t.equal(lgetxattr(join(dest, 'var'), 'trusted.overlay.opaque')?.toString(), 'y', 'OCI opaque marker became the xattr')
  t.same(readdirSync(join(dest, 'var')), ['kept'])
  t.equal(lgetxattr(join(dest, 'usr'), 'trusted.overlay.opaque')?.toString(), 'y', 'kernel opaque xattr from the tar kept')
  t.equal(lgetxattr(join(dest, 'usr'), 'trusted.overlay.redirect'), undefined, 'other overlay xattrs dropped')
  t.equal(lgetxattr(join(dest, 'usr'), 'trusted.overlay.overlay.redirect')?.toString(), '/nested', 'an escaped one is content: kept')
  t.equal(readFileSync(join(dest, LONG), 'utf8'), 'long name', 'long PAX name')
  t.equal(readFileSync(join(dest, 'replaced'), 'utf8'), 'second', 'a later entry replaces an earlier one')
})

t.test('gzip and plain give the same DiffID; the same tar twice gives the same DiffID', async (t) => {
  const plain = await buildTar(entries.map((e) => ({ mtime: MTIME, ...e })))
  const gz = await buildTar(entries.map((e) => ({ mtime: MTIME, ...e })), { gzip: true })
  t.equal(gz[0], 0x1f)
  const base = t.testdir()
  const ids: string[] = []
  for (const [i, buf] of [plain, gz, plain].entries()) {
    const dest = join(base, `l${i}`)
    mkdirSync(dest)
    ids.push((await extractLayerTar(streamOf(buf), dest)).diffId)
  }
  t.equal(ids[0], sha256Digest(plain))
  t.same(ids, [ids[0], ids[0], ids[0]])
})

t.test('an empty tar is an empty layer', async (t) => {
  const dest = join(t.testdir(), 'layer')
  mkdirSync(dest)
  const buf = await buildTar([])
  const r = await extractLayerTar(streamOf(buf), dest)
  t.equal(r.size, 1024)
  t.same(readdirSync(dest), [])
})
