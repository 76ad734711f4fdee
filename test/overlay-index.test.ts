import t from 'tap'
import { appendFileSync, chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Writable } from 'node:stream'
import pino from 'pino'
import { fingerprintLowers } from '../src/daemon/lower-fingerprint.js'
import { OverlayXattrs } from '../src/layers/overlay-xattrs.js'
import { standaloneLowerIndex } from '../src/daemon/standalone-index.js'
import { OverlayIndexStore } from '../src/store/overlay-index-store.js'
import { LowerIndex } from '../src/overlay/lower-index.js'
import { buildStack, randomStack } from './lib/layer-builder.js'
import { mountStratafs, unmountFuse } from './lib/overlay-mount.js'
import type { Tap } from './lib/tap.js'

/**
 * Issue 4: `stratafs overlay` keeps its lower index in LevelDB inside the work dir, reused only
 * while the lower dirs are unchanged, so a plain dir edited between two mounts shows its edits.
 */

/** Past the window in which a change could keep the ctime it follows (see lower-fingerprint). */
const SETTLE_MS = 2600

function layers (base: string): string[] {
  const l0 = join(base, 'l0')
  const l1 = join(base, 'l1')
  mkdirSync(join(l0, 'etc'), { recursive: true })
  mkdirSync(join(l1, 'etc'), { recursive: true })
  writeFileSync(join(l0, 'etc/base'), 'base\n')
  writeFileSync(join(l0, 'etc/shadowed'), 'bottom\n')
  writeFileSync(join(l1, 'etc/shadowed'), 'top\n')
  return [l0, l1]
}

/** The index as the standalone overlay gets it, and what it logged about it. */
async function load (lowers: string[], work: string): Promise<{ how: string, size: (path: string) => number | undefined, racy: boolean, walks: number }> {
  const lines: Array<{ msg: string, racy?: boolean, fingerprintMs?: number }> = []
  const sink = new Writable({ write (chunk: Buffer, _e, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  const index = await standaloneLowerIndex(lowers, work, OverlayXattrs.trusted, pino({ level: 'info' }, sink))
  const last = lines.at(-1)!
  // A build that follows a fingerprint which matched nothing walked the layers twice.
  const walks = last.msg === 'lower index built' && last.fingerprintMs !== undefined ? 2 : 1
  return { how: last.msg, racy: last.racy === true, walks, size: (path) => index.lookup(path)?.attr.size }
}

async function stored (lowers: string[], work: string): Promise<boolean> {
  const store = await OverlayIndexStore.open(join(work, 'stratafs'))
  try {
    return await store.load(fingerprintLowers(lowers, OverlayXattrs.trusted).digest) !== undefined
  } finally {
    await store.close()
  }
}

t.test('the index is stored, reused while nothing changed, rebuilt after any edit', async (t: Tap) => {
  const base = t.testdir()
  const lowers = layers(base)
  const work = join(base, 'work')
  mkdirSync(work)

  const fresh = await load(lowers, work)
  t.same([fresh.how, fresh.racy], ['lower index built', true], 'layers changed a moment ago: built, not trusted for later')
  t.notOk(await stored(lowers, work), 'and not stored')

  await sleep(SETTLE_MS)
  const settled = await load(lowers, work)
  t.same([settled.how, settled.walks], ['lower index built', 1], 'a work dir without an index: one walk builds and fingerprints')
  t.ok(await stored(lowers, work), 'stored once the layers have settled, under the fingerprint a separate walk takes')
  const again = await load(lowers, work)
  t.equal(again.how, 'lower index loaded', 'the next mount loads it')
  t.equal(again.size('/etc/shadowed'), 4, 'with the merged view')

  const edits: Array<[string, () => void, (r: Awaited<ReturnType<typeof load>>) => void]> = [
    ['data appended to a file in place', () => appendFileSync(join(lowers[1]!, 'etc/shadowed'), 'more\n'), (r) => t.equal(r.size('/etc/shadowed'), 9)],
    ['a chmod', () => chmodSync(join(lowers[0]!, 'etc/base'), 0o600), () => {}],
    ['a file added deep in a lower layer', () => writeFileSync(join(lowers[0]!, 'etc/new'), 'n'), (r) => t.equal(r.size('/etc/new'), 1)]
  ]
  for (const [what, edit, check] of edits) {
    await sleep(SETTLE_MS)
    // The index built right after the previous edit was racy: this one is stored.
    await load(lowers, work)
    t.equal((await load(lowers, work)).how, 'lower index loaded', `stored and loaded before: ${what}`)
    edit()
    const r = await load(lowers, work)
    t.same([r.how, r.walks], ['lower index built', 2], `rebuilt after ${what}, once the fingerprint differed`)
    check(r)
  }
})

t.test('one index per work dir: storing another drops the old one', async (t: Tap) => {
  const base = t.testdir()
  const lowers = layers(base)
  const store = await OverlayIndexStore.open(join(base, 'work', 'stratafs'))
  t.teardown(() => store.close())
  await store.save('sha256:a', [{ dir: '/', name: 'x', entry: 1 }])
  await store.save('sha256:b', [{ dir: '/', name: 'y', entry: 2 }])
  t.equal(await store.load('sha256:a'), undefined)
  const back: unknown[] = []
  for await (const r of (await store.load('sha256:b'))!) back.push(...r)
  t.same(back, [{ dir: '/', name: 'y', entry: 2 }])
  t.not(fingerprintLowers(lowers, OverlayXattrs.trusted).digest, fingerprintLowers([...lowers].reverse(), OverlayXattrs.trusted).digest, 'the order of the layers is part of the fingerprint')
  t.not(fingerprintLowers(lowers, OverlayXattrs.trusted).digest, fingerprintLowers(lowers, OverlayXattrs.user).digest, 'so is the opaque xattr an index of them reads')
})

t.test('stratafs overlay: a lower file edited between two mounts shows its edit', async (t: Tap) => {
  const base = t.testdir()
  const [l0, l1] = layers(base)
  const upper = join(base, 'upper')
  const work = join(base, 'work')
  mkdirSync(upper)
  mkdirSync(work)
  await sleep(SETTLE_MS)
  const opts = { lowerDirs: [l1!, l0!], upperDir: upper, workDir: work }
  const first = mountStratafs(t, opts)
  t.equal(readFileSync(join(first, 'etc/shadowed'), 'utf8'), 'top\n')
  t.equal(unmountFuse(first), undefined, 'unmounted')
  t.ok(await stored([l0!, l1!], work), 'the index is in the work dir')

  writeFileSync(join(l1!, 'etc/shadowed'), 'edited while unmounted\n')
  const second = mountStratafs(t, opts)
  t.equal(readFileSync(join(second, 'etc/shadowed'), 'utf8'), 'edited while unmounted\n', 'the edit shows, whole')
  t.equal(unmountFuse(second), undefined)
})

t.test('an index loaded from its records answers as the one built', async (t: Tap) => {
  for (const seed of [1, 2, 3]) {
    const lowers = buildStack(t.testdir(), randomStack(seed, 6))
    const built = await LowerIndex.build(lowers)
    const loaded = await LowerIndex.fromRecords(lowers, [[...built.records()]])
    const walk = (index: LowerIndex, dir: string, out: Map<string, unknown>): Map<string, unknown> => {
      const listed: Array<[string, number, number, number]> = []
      index.forEachListed(dir, (...e) => listed.push(e))
      for (const [name, mode, layer, ino] of listed) {
        const path = join(dir, name)
        const entry = index.lookup(path)
        out.set(path, entry)
        t.same([entry?.attr.mode, entry?.layer, entry?.attr.ino], [mode, layer, ino], `${path}: listed as looked up`)
        if (index.isDir(path)) walk(index, path, out)
      }
      return out
    }
    const names = walk(built, '/', new Map())
    t.ok([...names.values()].some((e) => (e as { target?: string }).target !== undefined), `seed ${seed}: symlinks in the view`)
    t.ok([...names.values()].some((e) => (e as { merged?: true }).merged === true), `seed ${seed}: merged directories in the view`)
    t.same(walk(loaded, '/', new Map()), names, `seed ${seed}: every name, type, attribute, target and merge the same`)
    t.same(loaded.root, built.root)
  }
})
