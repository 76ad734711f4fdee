import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, fsyncSync, ftruncateSync, openSync, readFileSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { errorCode } from '../src/errors.js'
import {
  copyData, fgetxattr, flistxattr, fremovexattr, fsetxattr, fstat, futimens, lgetxattr, listDir, llistxattr, preadCached,
  lremovexattr, lsetxattr, lstat, lutimens, makedev, major, minor, mknod, renameat2, truncate,
  RENAME_NOREPLACE, RENAME_WHITEOUT, UTIME_NOW, UTIME_OMIT, XATTR_CREATE
} from '../src/sys/index.js'
import { mountTmpfs } from './lib/tmpfs.js'

const { S_IFCHR, S_IFIFO, S_IFMT } = constants

t.test('lstat and lutimens keep nanoseconds', async t => {
  const dir = t.testdir({ f: 'hello' })
  const f = join(dir, 'f')
  lutimens(f, [1_600_000_000, 123_456_789], [1_700_000_000, 987_654_321])
  const st = lstat(f)
  t.same(st.mtime, [1_700_000_000, 987_654_321])
  t.same(st.atime, [1_600_000_000, 123_456_789])
  t.equal(st.size, 5)
  const ref = statSync(f, { bigint: true })
  t.equal(BigInt(st.ino), ref.ino)
  t.equal(BigInt(st.dev), ref.dev)
  t.equal(BigInt(st.mtime[0]) * 1_000_000_000n + BigInt(st.mtime[1]), ref.mtimeNs)

  lutimens(f, [0, UTIME_OMIT], [5, 7])
  t.same(lstat(f).atime, [1_600_000_000, 123_456_789], 'UTIME_OMIT leaves atime')
  t.same(lstat(f).mtime, [5, 7])
  const before = Math.floor(Date.now() / 1000)
  lutimens(f, [0, UTIME_OMIT], [0, UTIME_NOW])
  t.ok(lstat(f).mtime[0] >= before, 'UTIME_NOW sets the current time')

  symlinkSync('f', join(dir, 'link'))
  lutimens(join(dir, 'link'), [10, 1], [20, 2])
  t.same(lstat(join(dir, 'link')).mtime, [20, 2], 'the symlink itself changes')
  t.not(lstat(f).mtime[0], 20, 'its target does not')

  const fd = openSync(f, 'r+')
  t.teardown(() => closeSync(fd))
  futimens(fd, [1, 2], [3, 4])
  t.same(fstat(fd).mtime, [3, 4])
  t.equal(fstat(fd).ino, lstat(f).ino)
})

t.test('mknod makes char 0/0 and fifos', async t => {
  const dir = t.testdir()
  mknod(join(dir, 'wh'), S_IFCHR, makedev(0, 0))
  const wh = lstat(join(dir, 'wh'))
  t.equal(wh.mode & S_IFMT, S_IFCHR)
  t.equal(wh.rdev, 0)

  mknod(join(dir, 'null'), S_IFCHR | 0o666, makedev(1, 3))
  const nul = lstat(join(dir, 'null'))
  t.equal(major(nul.rdev), 1)
  t.equal(minor(nul.rdev), 3)
  t.equal(BigInt(nul.rdev), statSync(join(dir, 'null'), { bigint: true }).rdev)
  mknod(join(dir, 'big'), S_IFCHR | 0o600, makedev(4095, 1048575))
  const big = statSync(join(dir, 'big'), { bigint: true }).rdev
  t.equal(BigInt(makedev(4095, 1048575)), big, 'matches glibc makedev for wide numbers')
  t.equal(major(Number(big)), 4095)
  t.equal(minor(Number(big)), 1048575)

  mknod(join(dir, 'fifo'), S_IFIFO | 0o644, 0)
  t.equal(lstat(join(dir, 'fifo')).mode & S_IFMT, S_IFIFO)
  const err = t.throws(() => mknod(join(dir, 'fifo'), S_IFIFO | 0o644, 0))
  t.equal(errorCode(err), 'EEXIST')
  t.equal((err as { errno?: number }).errno, 17)
  t.match((err as Error).message, /^mknod .*fifo: EEXIST$/)
})

t.test('xattrs', async t => {
  const dir = t.testdir({ f: 'x' })
  const f = join(dir, 'f')
  t.equal(lgetxattr(f, 'user.missing'), undefined, 'ENODATA reads as undefined')
  t.same(llistxattr(f), [])
  lsetxattr(f, 'user.a', Buffer.from('1'))
  lsetxattr(f, 'trusted.overlay.opaque', Buffer.from('y'))
  // ext4 without ea_inode keeps all of a file's xattrs in one 4 KiB block (ENOSPC beyond).
  const big = Buffer.alloc(3 * 1024, 7)
  lsetxattr(f, 'user.big', big)
  t.same(lgetxattr(f, 'user.a'), Buffer.from('1'))
  t.same(lgetxattr(f, 'trusted.overlay.opaque'), Buffer.from('y'))
  t.same(lgetxattr(f, 'user.big'), big, 'a value larger than the first buffer')
  t.same(lgetxattr(f, 'user.a'), Buffer.from('1'))
  t.same(llistxattr(f).sort(), ['trusted.overlay.opaque', 'user.a', 'user.big'])
  lsetxattr(f, 'user.empty', Buffer.alloc(0))
  t.same(lgetxattr(f, 'user.empty'), Buffer.alloc(0), 'empty is not missing')
  const exists = t.throws(() => lsetxattr(f, 'user.a', Buffer.from('2'), XATTR_CREATE))
  t.equal(errorCode(exists), 'EEXIST')
  lremovexattr(f, 'user.a')
  t.equal(lgetxattr(f, 'user.a'), undefined)
  t.equal(errorCode(t.throws(() => lremovexattr(f, 'user.a'))), 'ENODATA')
  t.equal(errorCode(t.throws(() => lgetxattr(join(dir, 'nope'), 'user.a'))), 'ENOENT')

  const fd = openSync(f, 'r+')
  t.teardown(() => closeSync(fd))
  fsetxattr(fd, 'user.fd', Buffer.from('via fd'))
  t.same(fgetxattr(fd, 'user.fd'), Buffer.from('via fd'))
  t.ok(flistxattr(fd).includes('user.fd'))
  fremovexattr(fd, 'user.fd')
  t.equal(fgetxattr(fd, 'user.fd'), undefined)
})

t.test('xattr values of 10 KiB on tmpfs', async t => {
  const dir = mountTmpfs(t)
  const f = join(dir, 'f')
  writeFileSync(f, '')
  const big = Buffer.alloc(10 * 1024, 9)
  big.write('end', big.length - 3)
  lsetxattr(f, 'trusted.big', big)
  t.same(lgetxattr(f, 'trusted.big'), big)
  lsetxattr(f, 'user.big', big)
  t.same(lgetxattr(f, 'user.big'), big)
  t.same(llistxattr(f).sort(), ['trusted.big', 'user.big'])
})

t.test('renameat2', async t => {
  const dir = t.testdir({ a: 'A', b: 'B', c: 'C' })
  const noreplace = t.throws(() => renameat2(join(dir, 'a'), join(dir, 'b'), RENAME_NOREPLACE))
  t.equal(errorCode(noreplace), 'EEXIST')
  renameat2(join(dir, 'a'), join(dir, 'new'), RENAME_NOREPLACE)
  t.equal(readFileSync(join(dir, 'new'), 'utf8'), 'A')
  renameat2(join(dir, 'c'), join(dir, 'moved'), RENAME_WHITEOUT)
  const wh = lstat(join(dir, 'c'))
  t.equal(wh.mode & S_IFMT, S_IFCHR, 'a whiteout is left at the source')
  t.equal(wh.rdev, 0)
  t.equal(readFileSync(join(dir, 'moved'), 'utf8'), 'C')
})

t.test('truncate by path: grows with a hole, shrinks, and says ENOENT', async t => {
  const dir = t.testdir({ f: 'hello' })
  const f = join(dir, 'f')
  truncate(f, 2 ** 33)
  t.equal(statSync(f).size, 2 ** 33, 'past 2^32')
  t.ok(statSync(f).blocks < 64, 'no data written')
  truncate(f, 2)
  t.equal(readFileSync(f, 'utf8'), 'he')
  t.equal(errorCode(t.throws(() => truncate(join(dir, 'none'), 1))), 'ENOENT')
})

t.test('copyData keeps holes and content', async t => {
  const dir = t.testdir()
  const src = join(dir, 'src')
  const dst = join(dir, 'dst')
  const MiB = 1024 * 1024
  const s = openSync(src, 'w+')
  const chunk = Buffer.alloc(MiB, 0x5a)
  writeSync(s, Buffer.from('head'), 0, 4, 0)
  writeSync(s, chunk, 0, MiB, 40 * MiB)
  writeSync(s, Buffer.from('tail'), 0, 4, 100 * MiB)
  const size = 200 * MiB
  const d = openSync(dst, 'w+')
  t.teardown(() => { closeSync(s); closeSync(d) })
  // A trailing hole: only the final ftruncate makes the copy as long as the source.
  ftruncateSync(s, size)
  const method = await copyData(s, d, size)
  t.ok(['reflink', 'copy_file_range', 'buffered'].includes(method), `method ${method}`)
  const a = lstat(src)
  const b = lstat(dst)
  t.equal(b.size, size)
  t.ok(b.blocks <= a.blocks + 64, `holes kept: ${b.blocks} blocks vs ${a.blocks}`)
  t.ok(b.blocks < (10 * MiB) / 512, 'far fewer blocks than the apparent size')
  t.same(readFileSync(dst), readFileSync(src), 'same bytes')
})

t.test('copyData falls back to buffered across filesystems', async t => {
  const mnt = mountTmpfs(t)
  const data = Buffer.alloc(3 * 1024 * 1024 + 17, 0x33)
  writeFileSync(join(mnt, 'src'), data)
  const dir = t.testdir()
  const s = openSync(join(mnt, 'src'), 'r')
  const d = openSync(join(dir, 'dst'), 'w+')
  t.teardown(() => { closeSync(s); closeSync(d) })
  t.equal(await copyData(s, d, data.length), 'buffered', 'tmpfs to ext4 is EXDEV for copy_file_range')
  t.same(readFileSync(join(dir, 'dst')), data)
})

t.test('copyData of an empty file', async t => {
  const dir = t.testdir({ e: '' })
  const s = openSync(join(dir, 'e'), 'r')
  const d = openSync(join(dir, 'out'), 'w+')
  t.teardown(() => { closeSync(s); closeSync(d) })
  await copyData(s, d, 0)
  t.equal(fstat(d).size, 0)
})

t.test('copyData of a dense file in one extent, learning that reflinks are refused', async t => {
  const data = Buffer.alloc(2 * 1024 * 1024 + 5, 0x61)
  const dir = t.testdir()
  writeFileSync(join(dir, 'src'), data)
  const reflink = { supported: true }
  const methods: string[] = []
  for (const name of ['a', 'b']) {
    const s = openSync(join(dir, 'src'), 'r')
    const d = openSync(join(dir, name), 'w+')
    t.teardown(() => { closeSync(s); closeSync(d) })
    const method = await copyData(s, d, data.length, { reflink, dense: true })
    t.ok(['reflink', 'copy_file_range'].includes(method), `${name}: method ${method}`)
    methods.push(method)
    t.same(readFileSync(join(dir, name)), data, `${name}: same bytes, same size`)
  }
  // ext4 refuses reflinks (EOPNOTSUPP), btrfs and xfs make them: either way the answer sticks.
  t.equal(methods[0], methods[1], 'both copies went the same way')
  t.equal(reflink.supported, methods[0] === 'reflink', `reflinks supported: ${String(reflink.supported)}`)
})

t.test('preadCached reads only what the page cache holds', async t => {
  const dir = t.testdir()
  const file = join(dir, 'f')
  const data = Buffer.alloc(256 * 1024, 0x62)
  data.write('start', 0)
  writeFileSync(file, data)
  const fd = openSync(file, 'r')
  t.teardown(() => closeSync(fd))
  fsyncSync(fd)
  const buf = Buffer.alloc(128 * 1024)
  t.equal(preadCached(fd, buf, 5, 0), 5, 'a cached read answers at once')
  t.equal(buf.toString('utf8', 0, 5), 'start')
  t.equal(preadCached(fd, buf, buf.length, data.length - 100), 100, 'a read across the end is short')
  t.equal(preadCached(fd, buf, buf.length, data.length), 0, 'a read at the end answers 0')
  // GNU dd with iflag=nocache and no blocks to copy drops the file's clean pages.
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'])
  t.equal(preadCached(fd, buf, buf.length, 0), undefined, 'data only on disk is left to a slow read')
  readFileSync(file)
  t.equal(preadCached(fd, buf, buf.length, 0), buf.length, 'cached again once read')
})

t.test('listDir: every child with its lstat, in byte order of the names; errors as errno codes', async t => {
  const dir = t.testdir({ b: 'bee', B: 'big', 'a-b': '', '\uFF21': 'fullwidth A', '\u{1F600}': 'emoji', sub: {} })
  symlinkSync('b', join(dir, 'link'))
  mknod(join(dir, 'wh'), S_IFCHR | 0o644, 0)
  const listed = listDir(dir)
  t.same(listed.map(c => c.name), ['B', 'a-b', 'b', 'link', 'sub', 'wh', '\uFF21', '\u{1F600}'], 'bytes, not UTF-16 units')
  for (const { name, st } of listed) t.same(st, lstat(join(dir, name)), `${name}: the lstat of the child, not followed`)
  t.same(listDir(join(dir, 'sub')), [], 'an empty directory')
  t.throws(() => listDir(join(dir, 'missing')), { code: 'ENOENT', syscall: 'scandir' })
  t.throws(() => listDir(join(dir, 'b')), { code: 'ENOTDIR' })
  symlinkSync('sub', join(dir, 'dirlink'))
  t.throws(() => listDir(join(dir, 'dirlink')), { code: 'ENOTDIR' }, 'a symlink to a directory is not followed')
})
