import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { StrataError } from '../src/errors.js'
import { extractLayerTar } from '../src/layers/extract.js'
import { buildTar, streamOf, type FixtureEntry } from './lib/tar-fixtures.js'

const SECRET = 'root:x:0:0:root:/root:/bin/bash\n'

/**
 * A temp tree with a stand-in /etc next to the extraction target: `<base>/etc/passwd` and a
 * sentinel dir, both of which every hostile tar tries to reach.
 */
function arena (t: Test): { base: string, dest: string } {
  const base = t.testdir()
  mkdirSync(join(base, 'etc'))
  writeFileSync(join(base, 'etc', 'passwd'), SECRET)
  mkdirSync(join(base, 'sentinel'))
  mkdirSync(join(base, 'store', 'dest'), { recursive: true })
  return { base, dest: join(base, 'store', 'dest') }
}

function untouched (t: Test, base: string): void {
  t.equal(readFileSync(join(base, 'etc', 'passwd'), 'utf8'), SECRET, 'passwd stand-in untouched')
  t.same(readdirSync(join(base, 'etc')), ['passwd'], 'nothing new in etc')
  t.same(readdirSync(join(base, 'sentinel')), [], 'sentinel dir empty')
  t.same(readdirSync(base).sort(), ['etc', 'sentinel', 'store'], 'nothing new beside the store')
  t.same(readdirSync(join(base, 'store')), ['dest'], 'nothing new beside dest')
}

async function refused (t: Test, input: Buffer, code: string, message: RegExp): Promise<void> {
  const { base, dest } = arena(t)
  const err = await extractLayerTar(streamOf(input), dest).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof StrataError, `a StrataError (${String(err)})`)
  t.equal((err as StrataError).code, code)
  t.match((err as StrataError).message, message)
  untouched(t, base)
}

const cases: Array<[string, () => FixtureEntry[], string, RegExp]> = [
  ['dot-dot path', () => [{ name: '../../sentinel/x', body: 'pwned' }], 'UNSAFE_PATH', /"\.\.\/\.\.\/sentinel\/x" has a "\.\." component/],
  ['dot-dot inside', () => [{ name: 'a/../../../etc/passwd', body: 'pwned' }], 'UNSAFE_PATH', /"\.\." component/],
  ['absolute path', () => [{ name: '/etc/passwd', body: 'pwned' }], 'UNSAFE_PATH', /"\/etc\/passwd" is an absolute path/],
  ['write through an absolute symlink', () => [
    { name: 'a', type: 'symlink', linkname: '/PLACEHOLDER/etc' },
    { name: 'a/passwd', body: 'pwned' }
  ], 'UNSAFE_PATH', /"a\/passwd" goes through "a", which is a symlink/],
  ['write through a relative symlink', () => [
    { name: 'a', type: 'symlink', linkname: '../../etc' },
    { name: 'a/passwd', body: 'pwned' }
  ], 'UNSAFE_PATH', /goes through "a", which is a symlink/],
  ['directory replaced by a symlink, then written through', () => [
    { name: 'a/', type: 'directory' },
    { name: 'a', type: 'symlink', linkname: '../../sentinel' },
    { name: 'a/x', body: 'pwned' }
  ], 'UNSAFE_PATH', /goes through "a", which is a symlink/],
  ['entry below a regular file', () => [
    { name: 'f', body: 'x' },
    { name: 'f/x', body: 'pwned' }
  ], 'UNSAFE_PATH', /goes through "f", which is a regular file/],
  ['hard link out of the layer', () => [{ name: 'l', type: 'link', linkname: '../../etc/passwd' }], 'UNSAFE_PATH', /hard link target .* "\.\." component/],
  ['hard link to an absolute path', () => [{ name: 'l', type: 'link', linkname: '/PLACEHOLDER/etc/passwd' }], 'UNSAFE_PATH', /absolute path/],
  ['hard link through a symlink', () => [
    { name: 'a', type: 'symlink', linkname: '/PLACEHOLDER/etc' },
    { name: 'l', type: 'link', linkname: 'a/passwd' }
  ], 'UNSAFE_PATH', /hard link "l" points to "a\/passwd", which is not a regular file extracted earlier/],
  ['hard link to a symlink', () => [
    { name: 'a', type: 'symlink', linkname: '/PLACEHOLDER/etc/passwd' },
    { name: 'l', type: 'link', linkname: 'a' }
  ], 'UNSAFE_PATH', /not a regular file/],
  ['whiteout-named directory', () => [{ name: '.wh.foo/', type: 'directory' }], 'BAD_TAR', /"\.wh\.foo\/" is named like a whiteout marker/],
  ['whiteout-named symlink', () => [{ name: 'd/.wh.foo', type: 'symlink', linkname: '/etc' }], 'BAD_TAR', /named like a whiteout marker/],
  ['unknown meta-entry', () => [{ name: 'd/.wh..wh.plnk', body: '' }], 'BAD_TAR', /not a valid whiteout marker/],
  ['empty whiteout name', () => [{ name: 'd/.wh.', body: '' }], 'BAD_TAR', /not a valid whiteout marker/],
  ['whiteout of ..', () => [{ name: 'd/.wh...', body: '' }], 'BAD_TAR', /not a valid whiteout marker/],
  ['whiteout marker as a parent', () => [{ name: '.wh.x/y', body: 'z' }], 'BAD_TAR', /whiteout marker "\.wh\.x" as a parent/]
]

for (const [title, entries, code, message] of cases) {
  t.test(title, async (t) => {
    const { base } = arena(t)
    // Absolute targets point into this test's own tree, never at the real /etc.
    const fixed = entries().map((e) => e.linkname === undefined ? e : { ...e, linkname: e.linkname.replace('/PLACEHOLDER', base) })
    await refused(t, await buildTar(fixed), code, message)
  })
}

t.test('truncated in the middle of a file', async (t) => {
  const full = await buildTar([{ name: 'big', body: Buffer.alloc(10_000, 7) }])
  await refused(t, full.subarray(0, 4000), 'BAD_TAR', /unexpected end of tar/)
})

t.test('truncated at an entry boundary (no end-of-archive)', async (t) => {
  const full = await buildTar([{ name: 'a', body: 'x'.repeat(512) }, { name: 'b', body: 'y' }])
  await refused(t, full.subarray(0, 1024), 'BAD_TAR', /unexpected end of tar/)
})

t.test('truncated gzip', async (t) => {
  const gz = await buildTar([{ name: 'big', body: Buffer.alloc(100_000, 3) }], { gzip: true })
  await refused(t, gz.subarray(0, gz.length - 20), 'BAD_TAR', /corrupt gzip|unexpected end of tar/)
})

t.test('garbage after a gzip magic', async (t) => {
  const junk = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.from('this is not deflate data at all, no, not really')])
  await refused(t, junk, 'BAD_TAR', /corrupt gzip/)
})

t.test('random bytes', async (t) => {
  const random = Buffer.alloc(4096)
  for (let i = 0; i < random.length; i++) random[i] = (i * 7919 + 13) % 251
  await refused(t, random, 'BAD_TAR', /not a valid tar stream/)
})

t.test('empty input', async (t) => {
  await refused(t, Buffer.alloc(0), 'BAD_TAR', /empty/)
})

t.test('refuses a non-empty destination', async (t) => {
  const { dest } = arena(t)
  writeFileSync(join(dest, 'x'), '')
  await t.rejects(extractLayerTar(streamOf(await buildTar([])), dest), { code: 'EEXIST' })
})
