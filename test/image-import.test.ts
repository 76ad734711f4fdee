import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import t from 'tap'
import { layerTar } from '../src/layers/tar-writer.js'
import { ociArchitecture } from '../src/store/image-config.js'
import { startDaemon, type CliResult, type Daemon } from './lib/daemon.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { buildLayer } from './lib/layer-builder.js'
import { buildTar, sha256Digest } from './lib/tar-fixtures.js'
import { diffTrees, snapshot } from './lib/tree.js'
import type { Tap } from './lib/tap.js'

/**
 * `image import` of archives written here the way docker and skopeo write them: the classic
 * `docker save` tar, docker 25's (an OCI layout with a manifest.json), and a skopeo OCI layout
 * directory; then hostile variants of them. Through the CLI, against a daemon in its own process.
 */

type Files = Map<string, Buffer>

const hex = (digest: string): string => digest.slice('sha256:'.length)

/** JSON as Go's encoder writes it (docker's configs): compact, with <, > and & escaped. */
function goJson (value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value).replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`))
}

async function collect (stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c)
  return Buffer.concat(chunks)
}

/** The run config the fixture's image carries, and what `image inspect` must show of it. */
const RUN_CONFIG = {
  Env: ['PATH=/usr/bin:/bin', 'A=1'],
  Cmd: ['/bin/sh', '-c', 'echo hi && exit 0'],
  WorkingDir: '/srv',
  Labels: { 'org.example.kind': 'test' },
  ExposedPorts: { '80/tcp': {} },
  Entrypoint: null
}

interface Fixture { tars: Buffer[]; diffIds: string[]; config: Buffer; configDigest: string }

/** Two layers (the second deletes a file and makes a directory opaque) and a docker-shaped config. */
async function fixture (base: string): Promise<Fixture> {
  const l1 = join(base, 'l1')
  const l2 = join(base, 'l2')
  buildLayer(l1, [
    { type: 'dir', path: 'etc', mode: 0o755 },
    { type: 'file', path: 'etc/hello', content: 'hello\n' },
    { type: 'file', path: 'etc/gone', content: 'soon gone\n' },
    { type: 'file', path: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755 },
    { type: 'hardlink', path: 'bin/tool2', target: 'bin/tool' },
    { type: 'symlink', path: 'bin/sh', target: 'tool' },
    { type: 'file', path: 'var/cache/old', content: 'old' },
    { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 }
  ])
  buildLayer(l2, [
    { type: 'whiteout', path: 'etc/gone', form: 'kernel' },
    { type: 'dir', path: 'var/cache', opaque: 'kernel' },
    { type: 'file', path: 'var/cache/new', content: 'new' },
    { type: 'file', path: 'srv/app', content: 'app\n', uid: 1000, gid: 1000 }
  ])
  const tars = [await collect(layerTar(l1)), await collect(layerTar(l2))]
  const diffIds = tars.map(sha256Digest)
  const created = '2024-05-06T07:08:09.123456789Z'
  const config = goJson({
    architecture: ociArchitecture(),
    config: RUN_CONFIG,
    created,
    author: 'Ann <ann@example.org>',
    comment: 'buildkit.dockerfile.v0',
    docker_version: '24.0.7',
    history: [
      { created, created_by: '/bin/sh -c #(nop) ADD file:0123 in / ' },
      { created, created_by: '/bin/sh -c #(nop)  ENV A=1', empty_layer: true },
      { created, created_by: '/bin/sh -c rm /etc/gone && echo app > /srv/app', comment: 'step 3' }
    ],
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: diffIds }
  })
  return { tars, diffIds, config, configDigest: sha256Digest(config) }
}

/** The classic `docker save` form: `<id>.json`, `<layer id>/layer.tar`, manifest.json, repositories. */
function dockerClassic (f: Fixture, tags: string[]): Files {
  const files: Files = new Map([[`${hex(f.configDigest)}.json`, f.config]])
  const layers = f.tars.map((tar, i) => {
    const id = hex(sha256Digest(Buffer.from(`v1 layer ${i}`)))
    files.set(`${id}/VERSION`, Buffer.from('1.0'))
    files.set(`${id}/layer.tar`, tar)
    return `${id}/layer.tar`
  })
  files.set('manifest.json', goJson([{ Config: `${hex(f.configDigest)}.json`, RepoTags: tags, Layers: layers }]))
  return files
}

interface OciOptions { gzip?: boolean; annotations?: Record<string, string>; dockerManifest?: string[] }

/** An OCI image layout (skopeo's `oci:DIR:REF`); with `dockerManifest`, docker 25's save output. */
function ociLayout (f: Fixture, opts: OciOptions = {}): Files {
  const files: Files = new Map()
  const blob = (data: Buffer): { digest: string; size: number } => {
    const digest = sha256Digest(data)
    files.set(`blobs/sha256/${hex(digest)}`, data)
    return { digest, size: data.length }
  }
  const layerType = `application/vnd.oci.image.layer.v1.tar${opts.gzip === true ? '+gzip' : ''}`
  const layers = f.tars.map((tar) => ({ mediaType: layerType, ...blob(opts.gzip === true ? gzipSync(tar) : tar) }))
  const manifest = goJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...blob(f.config) },
    layers
  })
  const m = blob(manifest)
  files.set('oci-layout', goJson({ imageLayoutVersion: '1.0.0' }))
  files.set('index.json', goJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, ...(opts.annotations ? { annotations: opts.annotations } : {}) }]
  }))
  if (opts.dockerManifest !== undefined) {
    files.set('manifest.json', goJson([{
      Config: `blobs/sha256/${hex(f.configDigest)}`,
      RepoTags: opts.dockerManifest,
      Layers: layers.map((l) => `blobs/sha256/${hex(l.digest)}`)
    }]))
  }
  return files
}

function writeDir (files: Files, dir: string): string {
  for (const [name, data] of files) {
    mkdirSync(dirname(join(dir, name)), { recursive: true })
    writeFileSync(join(dir, name), data)
  }
  return dir
}

async function writeTar (files: Files, path: string, gzip = false): Promise<string> {
  const dirs = [...new Set([...files.keys()].map((n) => dirname(n)).filter((d) => d !== '.'))].sort()
  writeFileSync(path, await buildTar([
    ...dirs.map((d) => ({ name: `${d}/`, type: 'directory' as const, mode: 0o755 })),
    ...[...files].map(([name, body]) => ({ name, body, mode: 0o644 }))
  ], { gzip }))
  return path
}

async function ok (t: Tap, d: Daemon, args: string[]): Promise<string> {
  const r = await d.cli(args)
  t.equal(r.code, 0, `stratafs ${args.join(' ')} ${r.stderr.trim()}`)
  return r.stdout
}

function oneLine (t: Tap, r: CliResult, pattern: RegExp): void {
  t.equal(r.code, 1, 'exit 1')
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${JSON.stringify(r.stderr)}`)
  t.match(r.stderr, pattern)
}

interface Inspected { Id: string; RepoTags: string[]; Created: string; Author: string; Comment: string; Config: Record<string, unknown>; RootFS: { Layers: string[] }; GraphDriver: { Data: { LowerDir: string } } }

async function inspect (t: Tap, d: Daemon, ref: string): Promise<Inspected> {
  return (JSON.parse(await ok(t, d, ['image', 'inspect', ref])) as Inspected[])[0]!
}

/** Mounts the image read-only and compares it with kernel overlayfs on its stored layer dirs. */
async function compareWithKernel (t: Tap, d: Daemon, ref: string): Promise<void> {
  const img = await inspect(t, d, ref)
  const mnt = d.dir('mnt')
  await ok(t, d, ['mount', ref, mnt, '--read-only'])
  try {
    const kernel = mountKernelOverlay(t, { lowerDirs: img.GraphDriver.Data.LowerDir.split(':') })
    const ours = snapshot(mnt)
    t.same(diffTrees(snapshot(kernel), ours, { names: ['kernel', 'stratafs'], ignoreGhosts: 'a' }), [], `${ref} mounts as kernel overlayfs shows its layers`)
    t.equal(ours.get('/etc/gone'), undefined, 'the whiteout hides /etc/gone')
    t.same([...ours.keys()].filter((p) => p.startsWith('/var/cache/')), ['/var/cache/new'], 'the opaque dir hides the lower entries')
    t.equal(ours.get('/srv/app')?.uid, 1000, 'owners kept')
  } finally {
    await ok(t, d, ['umount', mnt])
  }
}

t.test('docker save archive (classic form): image, config, history, mount', async (t) => {
  const d = await startDaemon(t)
  const f = await fixture(d.dir('src'))
  const archive = await writeTar(dockerClassic(f, ['app:1', 'docker.io/library/app:latest']), join(d.dir('a'), 'app.tar'))
  t.equal(await ok(t, d, ['image', 'import', archive]), 'Loaded image: app:1\nLoaded image: app:latest\n', 'docker load\'s output')

  const img = await inspect(t, d, 'app:1')
  t.equal(img.Id, f.configDigest, 'the ID is the digest of the archive\'s config bytes, as docker has it')
  t.same(img.RepoTags, ['app:1', 'app:latest'])
  t.same(img.RootFS.Layers, f.diffIds)
  t.equal(img.Created, '2024-05-06T07:08:09.123456789Z')
  t.equal(img.Author, 'Ann <ann@example.org>')
  t.equal(img.Comment, 'buildkit.dockerfile.v0', 'the config\'s comment, as docker inspect shows it')
  t.same(img.Config, RUN_CONFIG, 'the config as docker inspect shows it')

  const history = JSON.parse(await ok(t, d, ['image', 'history', 'app:1', '--json'])) as Array<{ image: string; created_by: string; empty_layer?: boolean; size: number; comment?: string }>
  t.equal(history.length, 3, 'one row per history entry, empty layers included')
  t.equal(history[0]!.image, f.configDigest)
  t.equal(history[0]!.comment, 'step 3')
  t.equal(history[1]!.empty_layer, true)
  t.equal(history[1]!.size, 0)
  t.equal(history[2]!.size, f.tars[0]!.length, 'the bottom entry carries the first layer')
  t.match(await ok(t, d, ['image', 'history', 'app:1']), /ENV A=1/)

  const ls = JSON.parse(await ok(t, d, ['image', 'ls', '--json'])) as Array<{ Repository: string; Tag: string; ID: string }>
  t.same(ls.map((r) => `${r.Repository}:${r.Tag}`).sort(), ['app:1', 'app:latest'])
  t.ok(ls.every((r) => r.ID === f.configDigest))
  t.match(await ok(t, d, ['image', 'ls']), new RegExp(`app\\s+1\\s+${hex(f.configDigest).slice(0, 12)}`))

  await compareWithKernel(t, d, 'app:1')
})

t.test('OCI layouts (skopeo directory, docker 25 archive, gzipped tar): same ID, layers stored once', async (t) => {
  const d = await startDaemon(t)
  const f = await fixture(d.dir('src'))
  const dir = writeDir(ociLayout(f, { gzip: true, annotations: { 'org.opencontainers.image.ref.name': 'app:oci' } }), d.dir('oci'))
  t.equal(await ok(t, d, ['image', 'import', dir]), 'Loaded image: app:oci\n')
  t.equal((await inspect(t, d, 'app:oci')).Id, f.configDigest)
  await compareWithKernel(t, d, 'app:oci')

  const docker25 = await writeTar(ociLayout(f, { gzip: true, dockerManifest: ['app:25'] }), join(d.dir('a'), 'app25.tar'))
  const again = JSON.parse(await ok(t, d, ['image', 'import', docker25, '--json'])) as Array<{ id: string; tags: string[]; format: string; newLayers: number }>
  t.same(again, [{ id: f.configDigest, tags: ['app:25'], format: 'docker-archive', layers: 2, newLayers: 0 }], 'docker 25 form read through manifest.json; its layers are already stored')

  const d2 = await startDaemon(t)
  const gz = await writeTar(ociLayout(f, { annotations: { 'io.containerd.image.name': 'docker.io/library/app:ctr', 'org.opencontainers.image.ref.name': 'ctr' } }), join(d2.dir('a'), 'app.tar.gz'), true)
  const fresh = JSON.parse(await ok(t, d2, ['image', 'import', gz, '--json'])) as Array<{ id: string; tags: string[]; newLayers: number }>
  t.same(fresh.map((i) => [i.id, i.tags, i.newLayers]), [[f.configDigest, ['app:ctr'], 2]], 'gzipped tar of an uncompressed layout; containerd\'s name, shortened as docker shows it')
  t.equal(await ok(t, d2, ['image', 'import', dir, '--tag', 'mine:2']), 'Loaded image: mine:2\n', '--tag replaces the archive\'s name')
  const bare = writeDir(ociLayout(f, { annotations: { 'org.opencontainers.image.ref.name': 'latest' } }), d2.dir('bare'))
  t.equal(await ok(t, d2, ['image', 'import', bare]), `Loaded image ID: ${f.configDigest}\n`, 'a bare tag names no repository: the image stays untagged')
  await compareWithKernel(t, d2, 'mine:2')
})

t.test('hostile and broken archives: one line each, nothing stored, the store keeps working', async (t) => {
  const d = await startDaemon(t)
  const f = await fixture(d.dir('src'))
  const work = d.dir('hostile')
  const outside = join(d.base, 'escaped')
  let n = 0
  const tarOf = async (files: Files): Promise<string> => writeTar(files, join(work, `a${++n}.tar`))
  const dirOf = (files: Files): string => writeDir(files, join(work, `d${++n}`))

  const classic = dockerClassic(f, ['evil:1'])
  const traversal = new Map(classic)
  traversal.set('manifest.json', goJson([{ Config: `${hex(f.configDigest)}.json`, RepoTags: ['evil:1'], Layers: ['../../escaped/layer.tar', 'x/layer.tar'] }]))
  oneLine(t, await d.cli(['image', 'import', await tarOf(traversal)]), /manifest\.json entry 1 layer 1 "\.\.\/\.\.\/escaped\/layer\.tar" has a "\.\." component/)

  const absolute = new Map(classic)
  absolute.set('manifest.json', goJson([{ Config: '/etc/passwd', RepoTags: [], Layers: [] }]))
  oneLine(t, await d.cli(['image', 'import', await tarOf(absolute)]), /Config "\/etc\/passwd" is an absolute path/)

  const oci = ociLayout(f)
  const badDigest = new Map(oci)
  badDigest.set('index.json', goJson({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:../../../escaped', size: 10 }] }))
  oneLine(t, await d.cli(['image', 'import', dirOf(badDigest)]), /index\.json entry 1 has an invalid digest/)

  const layerBlob = `blobs/sha256/${hex(sha256Digest(f.tars[1]!))}`
  const tampered = new Map(oci)
  const changed = Buffer.from(f.tars[1]!)
  changed[changed.indexOf('app\n')] = 'x'.charCodeAt(0)
  tampered.set(layerBlob, changed)
  oneLine(t, await d.cli(['image', 'import', await tarOf(tampered)]), /layer 2\/2 \(blobs\/sha256\/[0-9a-f]{64}\): blob .* does not match its digest/)

  const missingBlob = new Map(oci)
  missingBlob.delete(layerBlob)
  oneLine(t, await d.cli(['image', 'import', dirOf(missingBlob)]), /layer 2\/2 .*: blob "blobs\/sha256\/[0-9a-f]{64}" is missing from the archive/)

  const full = await tarOf(classic)
  const whole = readFileSync(full)
  const truncated = join(work, 'truncated.tar')
  writeFileSync(truncated, whole.subarray(0, Math.floor(whole.length * 0.6)))
  oneLine(t, await d.cli(['image', 'import', truncated]), /truncated/)

  const wrongDiff = new Map(classic)
  const claimed = sha256Digest(Buffer.from('another layer'))
  const lying = goJson({ ...JSON.parse(f.config.toString()), rootfs: { type: 'layers', diff_ids: [f.diffIds[0], claimed] } })
  wrongDiff.delete(`${hex(f.configDigest)}.json`)
  wrongDiff.set('config.json', lying)
  wrongDiff.set('manifest.json', goJson([{ Config: 'config.json', RepoTags: ['evil:1'], Layers: [...classic.keys()].filter((k) => k.endsWith('layer.tar')) }]))
  oneLine(t, await d.cli(['image', 'import', await tarOf(wrongDiff)]), new RegExp(`layer 2/2 \\([0-9a-f]{64}/layer\\.tar\\) has DiffID ${f.diffIds[1]} but the image config says ${claimed}`))

  const badConfig = new Map(classic)
  badConfig.set(`${hex(f.configDigest)}.json`, Buffer.concat([f.config, Buffer.from(' ')]))
  oneLine(t, await d.cli(['image', 'import', await tarOf(badConfig)]), /image config "[0-9a-f]{64}\.json" does not match its digest/)

  const zstd = new Map(oci)
  const index = JSON.parse(oci.get('index.json')!.toString()) as { manifests: Array<{ digest: string }> }
  const manifest = JSON.parse(oci.get(`blobs/sha256/${hex(index.manifests[0]!.digest)}`)!.toString()) as { layers: Array<{ mediaType: string }> }
  manifest.layers[0]!.mediaType = 'application/vnd.oci.image.layer.v1.tar+zstd'
  const mBytes = goJson(manifest)
  zstd.set(`blobs/sha256/${hex(sha256Digest(mBytes))}`, mBytes)
  zstd.set('index.json', goJson({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256Digest(mBytes), size: mBytes.length }] }))
  oneLine(t, await d.cli(['image', 'import', dirOf(zstd)]), /is zstd-compressed .*only gzip and uncompressed layers/)

  const linkOut = dirOf(oci)
  const configPath = join(linkOut, 'blobs/sha256', hex(f.configDigest))
  rmSync(configPath)
  writeFileSync(join(d.base, 'secret'), f.config)
  symlinkSync(join(d.base, 'secret'), configPath)
  oneLine(t, await d.cli(['image', 'import', linkOut]), /is a symlink that leads out of the archive/)
  rmSync(configPath)
  symlinkSync('../../../secret', configPath)
  oneLine(t, await d.cli(['image', 'import', linkOut]), /is a symlink that leads out of the archive/)

  oneLine(t, await d.cli(['image', 'import', d.dir('empty')]), /neither an OCI image layout .* nor a docker save archive/)
  oneLine(t, await d.cli(['image', 'import', join(work, 'nope.tar')]), /does not exist/)
  oneLine(t, await d.cli(['image', 'import', full, '--tag', 'Bad:Tag']), /invalid reference format/)

  t.notOk(existsSync(outside), 'nothing written outside the store')
  t.same(readdirSync(join(d.root, 'tmp')), [], 'no staging left behind')
  t.equal((await ok(t, d, ['layer', 'ls', '--json'])).trim(), '[]', 'no layer stored from a bad archive')
  t.equal((await ok(t, d, ['image', 'ls', '--json'])).trim(), '[]', 'no image either')
  t.equal(await ok(t, d, ['image', 'import', full]), 'Loaded image: evil:1\n', 'and a good archive still imports')
})

t.test('multi-platform indexes and multi-image archives', async (t) => {
  const d = await startDaemon(t)
  const f = await fixture(d.dir('src'))
  const files = ociLayout(f, { gzip: true })
  const top = JSON.parse(files.get('index.json')!.toString()) as { manifests: Array<Record<string, unknown>> }
  const ours = { ...top.manifests[0], platform: { os: 'linux', architecture: ociArchitecture() } }
  const absent = { ...top.manifests[0], digest: sha256Digest(Buffer.from('not saved')), platform: { os: 'linux', architecture: 'mips64le' } }
  const withIndex = (entries: Array<Record<string, unknown>>, ref: string): Files => {
    const nested = goJson({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries })
    const out = new Map(files)
    out.set(`blobs/sha256/${hex(sha256Digest(nested))}`, nested)
    out.set('index.json', goJson({
      schemaVersion: 2,
      manifests: [{
        mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha256Digest(nested), size: nested.length,
        annotations: { 'org.opencontainers.image.ref.name': ref }
      }]
    }))
    return out
  }
  const multi = writeDir(withIndex([absent, ours], 'multi:1'), d.dir('multi'))
  t.equal(await ok(t, d, ['image', 'import', multi]), 'Loaded image: multi:1\n', 'this machine\'s platform picked from the index')
  t.equal((await inspect(t, d, 'multi:1')).Id, f.configDigest)
  const foreign = writeDir(withIndex([absent], 'foreign:1'), d.dir('foreign'))
  oneLine(t, await d.cli(['image', 'import', foreign]), new RegExp(`has no linux/${ociArchitecture()} image \\(it has linux/mips64le\\)`))

  // Two images sharing their bottom layer, saved once and linked, as `docker save a b` does.
  const d2 = await startDaemon(t)
  const g = { ...f, config: goJson({ ...JSON.parse(f.config.toString()), rootfs: { type: 'layers', diff_ids: [f.diffIds[0]] }, history: [] }) }
  g.configDigest = sha256Digest(g.config)
  const classic = dockerClassic(f, ['two:a'])
  const first = [...classic.keys()].find((k) => k.endsWith('layer.tar'))!
  const entries = [...classic].map(([name, body]) => ({ name, body, mode: 0o644 }))
  // The linked name comes first, so the layer is read through the link.
  const manifest = [
    { Config: `${hex(g.configDigest)}.json`, RepoTags: ['two:b'], Layers: ['shared/layer.tar'] },
    ...(JSON.parse(classic.get('manifest.json')!.toString()) as unknown[])
  ]
  const two = join(d.dir('two'), 'two.tar')
  writeFileSync(two, await buildTar([
    ...entries.filter((e) => e.name !== 'manifest.json'),
    { name: `${hex(g.configDigest)}.json`, body: g.config, mode: 0o644 },
    { name: 'shared/', type: 'directory', mode: 0o755 },
    { name: 'shared/layer.tar', type: 'symlink', linkname: `../${first}` },
    { name: 'manifest.json', body: goJson(manifest), mode: 0o644 }
  ]))
  oneLine(t, await d2.cli(['image', 'import', two, '--tag', 'x:1']), /holds 2 images; --tag names exactly one/)
  const both = JSON.parse(await ok(t, d2, ['image', 'import', two, '--json'])) as Array<{ id: string; tags: string[]; newLayers: number }>
  t.same(both.map((i) => [i.id, i.tags, i.newLayers]), [[g.configDigest, ['two:b'], 1], [f.configDigest, ['two:a'], 1]])
  t.same((await inspect(t, d2, 'two:b')).RootFS.Layers, [f.diffIds[0]])

  const d3 = await startDaemon(t)
  const twoDir = writeDir(new Map([...classic, [`${hex(g.configDigest)}.json`, g.config], ['manifest.json', goJson(manifest)]]), d3.dir('two'))
  mkdirSync(join(twoDir, 'shared'))
  symlinkSync(`../${first}`, join(twoDir, 'shared', 'layer.tar'))
  const fromDir = JSON.parse(await ok(t, d3, ['image', 'import', twoDir, '--json'])) as Array<{ id: string; newLayers: number }>
  t.same(fromDir.map((i) => [i.id, i.newLayers]), [[g.configDigest, 1], [f.configDigest, 1]], 'the same archive unpacked: the relative link is followed inside it')
})
