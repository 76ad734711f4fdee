import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { StrataError } from '../src/errors.js'
import { chainIds } from '../src/layers/digest.js'
import { importLayer } from '../src/layers/import.js'
import { imageId, type ImageConfig } from '../src/store/image-config.js'
import { Level } from 'level'
import { IndexTable } from '../src/store/index-table.js'
import type { ChainRecord } from '../src/store/records.js'
import { Store } from '../src/store/store.js'

const freshRoot = (t: Test): string => {
  const dir = mkdtempSync(join(tmpdir(), 'stratafs-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function layerSource (t: Test, content: string): string {
  const src = mkdtempSync(join(tmpdir(), 'stratafs-src-'))
  t.teardown(() => rmSync(src, { recursive: true, force: true }))
  writeFileSync(join(src, 'file'), content)
  mkdirSync(join(src, 'dir'))
  return src
}

async function importDir (store: Store, src: string): Promise<string> {
  const staged = await importLayer(src, store.layout.tmpDir)
  return (await store.addLayer(staged, src)).layer.diffId
}

/** Imports a one-file layer; `content` decides its DiffID. */
async function addLayer (store: Store, content: string): Promise<string> {
  const src = mkdtempSync(join(tmpdir(), 'stratafs-src-'))
  try {
    writeFileSync(join(src, 'file'), content)
    return await importDir(store, src)
  } finally {
    rmSync(src, { recursive: true, force: true })
  }
}

function config (diffIds: string[], created = '2026-01-01T00:00:00.000Z'): ImageConfig {
  return {
    architecture: 'amd64',
    os: 'linux',
    created,
    config: { Env: ['A=1'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map(() => ({ created, created_by: 'test' }))
  }
}

const code = (err: unknown): string | undefined => (err instanceof StrataError ? err.code : undefined)

t.test('a second opener of a root is refused with STORE_LOCKED', async (t) => {
  const root = freshRoot(t)
  const store = await Store.open(root)
  t.teardown(() => store.close())
  await t.rejects(Store.open(root), { code: 'STORE_LOCKED', message: /another stratafs daemon is using/ })
})

t.test('layers are stored once; images, tags and refs', async (t) => {
  const root = freshRoot(t)
  const store = await Store.open(root)
  t.teardown(() => store.close())
  const src = layerSource(t, 'a')
  const a = await importDir(store, src)
  const again = await importDir(store, src)
  t.equal(again, a, 'same content, same DiffID')
  t.equal((await store.layers()).length, 1, 'stored once')
  t.ok(existsSync(store.layerDir(a)), 'layer dir under <root>/layers/<hex>')
  t.same(readdirSync(store.layout.tmpDir), [], 'no staging left')

  const b = await addLayer(store, 'b')
  const img = await store.createImage(config([a, b]), ['app:1', 'app'])
  t.equal(img.id, imageId(config([a, b])), 'the id is the sha256 of the canonical config')
  t.match(img.id, /^sha256:[0-9a-f]{64}$/)
  t.same((await store.tagsOf(img.id)).sort(), ['app:1', 'app:latest'], 'a bare name means :latest')

  for (const ref of [img.id, img.id.slice(7), img.id.slice(0, 15), img.id.slice(7, 15), 'app:1', 'app', 'app:latest']) {
    t.equal((await store.resolveImage(ref)).id, img.id, `resolves ${ref}`)
  }
  await t.rejects(store.resolveImage('nosuch:1'), { code: 'NOT_FOUND' })
  await t.rejects(store.resolveImage('Upper:1'), { code: 'NOT_FOUND' })
  await t.rejects(store.createImage(config(['sha256:' + '0'.repeat(64)])), { code: 'NOT_FOUND' }, 'unknown layer')
  await t.rejects(store.tag('app:1', 'BAD NAME'), { code: 'BAD_REQUEST' })

  t.equal(await store.tag('app:1', 'other:2'), 'other:2')
  t.equal((await store.resolveImage('other:2')).id, img.id)
  t.equal(await store.imageSize(img), (await store.layer(a)).size + (await store.layer(b)).size)
})

t.test('chain index round trip and range keys', async (t) => {
  const root = freshRoot(t)
  const store = await Store.open(root)
  t.teardown(() => store.close())
  const chain = chainIds(['sha256:' + '1'.repeat(64)])[0]!
  const records: Array<ChainRecord<{ root?: boolean, n?: number }>> = [
    { dir: '/', name: '', entry: { root: true } },
    { dir: '/', name: 'a', entry: { n: 1 } },
    { dir: '/a', name: 'b', entry: { n: 2 } },
    { dir: '/a/b', name: 'c', entry: { n: 3 } },
    { dir: '/a', name: 'b c', entry: { n: 4 } }
  ]
  t.notOk(await store.hasChainIndex(chain))
  t.equal(await store.putChainIndex(chain, records), records.length)
  t.ok(await store.hasChainIndex(chain))
  const back = []
  for await (const r of store.chainIndex(chain)) back.push(...r)
  t.same(back.map((r) => `${r.dir}|${r.name}`).sort(), records.map((r) => `${r.dir}|${r.name}`).sort(), 'every record comes back')
})

t.test('image rm: tags first, then the image, keeping shared layers', async (t) => {
  const root = freshRoot(t)
  const store = await Store.open(root)
  t.teardown(() => store.close())
  const base = await addLayer(store, 'base')
  const top1 = await addLayer(store, 'top1')
  const top2 = await addLayer(store, 'top2')
  const one = await store.createImage(config([base, top1]), ['one:1', 'one:alias'])
  const two = await store.createImage(config([base, top2]), ['two:1'])
  await store.putChainIndex(chainIds([base, top1]).at(-1)!, [{ dir: '/', name: 'x', entry: 1 }])
  await store.putChainIndex(chainIds([base]).at(-1)!, [{ dir: '/', name: 'x', entry: 1 }])

  t.same(await store.removeImage('one:alias'), { untagged: ['one:alias'], deleted: [], layersDeleted: [] }, 'another tag remains: untag only')
  t.equal((await store.resolveImage('one:1')).id, one.id)

  const container = await store.createContainer({ image: two, readOnly: false })
  t.ok(existsSync(store.layout.upperDir(container.id)), 'upper dir made')
  t.match(container.name, /^[a-z]+_[a-z]+\d*$/, 'a docker-like name')
  await t.rejects(store.createContainer({ name: container.name, image: two, readOnly: false }), { code: 'CONFLICT' }, 'names are unique')
  await t.rejects(store.removeImage('two:1'), { code: 'CONFLICT' }, 'refused while a container uses it')

  const removed = await store.removeImage('one:1')
  t.same(removed.deleted, [one.id])
  t.same(removed.layersDeleted, [top1], 'only the layer nothing else uses goes')
  t.notOk(existsSync(store.layerDir(top1)))
  t.ok(existsSync(store.layerDir(base)), 'the shared base stays')
  t.notOk(await store.hasChainIndex(chainIds([base, top1]).at(-1)!), 'its chain index goes')
  t.ok(await store.hasChainIndex(chainIds([base]).at(-1)!), 'the shared chain index stays')

  const forced = await store.removeImage('two:1', true)
  t.same(forced.deleted, [two.id])
  t.same(forced.layersDeleted, [], 'layers a container stacks on stay, even when forced')
  t.equal(code(await store.resolveImage(two.id).catch((e: unknown) => e)), 'NOT_FOUND')

  await store.removeContainer(container.id)
  t.notOk(existsSync(store.layout.containerDir(container.id)), 'container dirs removed')
  t.same((await store.layers()).map((l) => l.diffId), [], 'the last layers go with the last container')
})

t.test('data survives a close and reopen; tmp is cleaned at open', async (t) => {
  const root = freshRoot(t)
  let store = await Store.open(root)
  const a = await addLayer(store, 'keep')
  const img = await store.createImage(config([a]), ['keep:1'])
  mkdirSync(join(store.layout.tmpDir, 'leftover'))
  await store.close()
  store = await Store.open(root)
  t.teardown(() => store.close())
  t.equal((await store.resolveImage('keep:1')).id, img.id)
  t.notOk(existsSync(join(store.layout.tmpDir, 'leftover')), 'staging of a dead daemon is cleaned')
})

t.test('an index stored a record per name (the first format) is not taken: it is rebuilt over', async t => {
  const dir = freshRoot(t)
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' })
  await db.open()
  t.teardown(() => db.close())
  const key = 'sha256:' + '2'.repeat(64)
  // What the first format wrote: a marker with no format, one record per name.
  await db.sublevel<string, unknown>('chains', { valueEncoding: 'json' }).put(key, { records: 2, created: '2026-11-01T00:00:00.000Z' })
  const oldRecords = db.sublevel<string, unknown>('index', { valueEncoding: 'json' })
  await oldRecords.put(`${key}//\0`, { root: true })
  await oldRecords.put(`${key}//\0old`, { n: 0 })
  const table = new IndexTable(db)
  t.notOk(await table.has(key), 'an old marker does not count')
  await table.put(key, [{ dir: '/', name: '', entry: { root: true } }, { dir: '/', name: 'new', entry: { n: 1 } }])
  t.ok(await table.has(key))
  const back = []
  for await (const batch of table.get(key)) back.push(...batch)
  t.same(back.map(r => r.name).sort(), ['', 'new'], 'only the new records, the old ones dropped')
  t.same(await oldRecords.keys({ gte: `${key}/`, lt: `${key}0` }).all(), [`${key}//`], 'one record for the one directory')
})
