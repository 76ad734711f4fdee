import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { scanLayer } from '../src/layers/scan.js'
import { DEFAULT_MTIME, buildLayer } from './lib/layer-builder.js'

const S_IFMT = 0o170000
const S_IFCHR = 0o020000

t.test('walks parents first, names in byte order, markers folded in', async (t) => {
  const dir = t.testdir()
  buildLayer(dir, [
    { type: 'file', path: 'b', content: 'bee' },
    { type: 'file', path: 'B', content: 'big' },
    { type: 'dir', path: 'a' },
    { type: 'file', path: 'a/\uFF21', content: 'fullwidth A: bytes ef bc a1' },
    { type: 'file', path: 'a/\u{1F600}', content: 'emoji: bytes f0 9f 98 80' },
    { type: 'file', path: 'a-b', content: '' },
    { type: 'dir', path: 'k', opaque: 'kernel' },
    { type: 'dir', path: 'o', opaque: 'oci' },
    { type: 'file', path: 'o/inside', content: 'x' },
    { type: 'whiteout', path: 'o/gone-oci', form: 'oci' },
    { type: 'whiteout', path: 'o/gone-kernel', form: 'kernel' },
    { type: 'symlink', path: 's', target: '../nowhere' },
    { type: 'hardlink', path: 'b2', target: 'b' },
    { type: 'char', path: 'null', major: 1, minor: 3 }
  ])
  const entries = [...scanLayer(dir)]
  t.same(entries.map((e) => e.path), [
    '/', '/B', '/a', '/a/\uFF21', '/a/\u{1F600}', '/a-b', '/b', '/b2', '/k', '/null', '/o', '/o/gone-kernel',
    '/o/gone-oci', '/o/inside', '/s'
  ])
  const by = new Map(entries.map((e) => [e.path, e]))
  t.equal(by.get('/k')?.opaque, true, 'kernel opaque')
  t.equal(by.get('/o')?.opaque, true, 'OCI opaque')
  t.equal(by.get('/a')?.opaque, undefined)
  for (const p of ['/o/gone-oci', '/o/gone-kernel']) {
    t.equal(by.get(p)?.whiteout, true, `${p} is a whiteout`)
    t.equal((by.get(p)?.attr.mode ?? 0) & S_IFMT, S_IFCHR, 'reported as char 0/0')
    t.equal(by.get(p)?.attr.rdev, 0)
  }
  t.equal(by.get('/null')?.whiteout, undefined, 'a real device is no whiteout')
  t.equal(by.get('/s')?.target, '../nowhere')
  t.same(by.get('/b')?.attr.mtime, DEFAULT_MTIME, 'nanosecond mtime')
  t.equal(by.get('/b')?.attr.ino, by.get('/b2')?.attr.ino, 'hard links share ino')
  t.equal(by.get('/b')?.attr.nlink, 2)
})

t.test('a real name beside its own OCI whiteout wins', async (t) => {
  const dir = t.testdir({ x: 'real', '.wh.x': '', '.wh.': '' })
  t.same([...scanLayer(dir)].map((e) => [e.path, e.whiteout ?? false]), [['/', false], ['/x', false]])
})

t.test('20,000 files in well under a second', async (t) => {
  const dir = t.testdir()
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(dir, `d${d}`))
    for (let f = 0; f < 200; f++) writeFileSync(join(dir, `d${d}`, `f${f}`), '')
  }
  let best = Infinity
  let count = 0
  for (let round = 0; round < 2; round++) {
    const start = process.hrtime.bigint()
    count = 0
    for (const _ of scanLayer(dir)) count++
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e6)
  }
  t.equal(count, 20_101)
  t.ok(best < 1000, `scan took ${best.toFixed(0)} ms`)
})
