import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { appendFileSync, chmodSync, closeSync, fstatSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { lgetxattr, renameat2, RENAME_EXCHANGE } from '../src/sys/index.js'
import { startDaemon, type Daemon } from './lib/daemon.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs, unmountFuse } from './lib/overlay-mount.js'
import { freshWork, stackDirs } from './lib/stack-dirs.js'
import { diffTrees, snapshot } from './lib/tree.js'
import type { Tap } from './lib/tap.js'

/**
 * Issue 4: containers copy up metadata only (kernel metacopy=on format), and commit gives such
 * files their lower data, so the committed image shows what the container showed.
 */

const BIG = 32 * 1024 * 1024
const METACOPY = 'trusted.overlay.metacopy'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

async function cli (t: Tap, d: Daemon, args: string[]): Promise<string> {
  const r = await d.cli(args)
  t.equal(r.code, 0, `stratafs ${args.join(' ')} ${r.stderr.trim()}`)
  return r.stdout
}

t.test('chmod of a big lower file in a container, then commit', async (t) => {
  const d = await startDaemon(t)
  const src = d.dir('src')
  const big = randomBytes(BIG)
  mkdirSync(join(src, 'l1', 'data'), { recursive: true })
  writeFileSync(join(src, 'l1', 'data', 'big'), big, { mode: 0o644 })
  writeFileSync(join(src, 'l1', 'data', 'small'), 'small\n', { mode: 0o644 })
  mkdirSync(join(src, 'l2', 'data'), { recursive: true })
  writeFileSync(join(src, 'l2', 'data', 'top'), 'top\n')
  await cli(t, d, ['image', 'create', 'mc:1', join(src, 'l1'), join(src, 'l2')])

  const mnt = d.dir('mnt')
  await cli(t, d, ['mount', 'mc:1', mnt, '--name', 'c1'])
  chmodSync(join(mnt, 'data/big'), 0o600)
  chmodSync(join(mnt, 'data/small'), 0o640)
  renameSync(join(mnt, 'data/small'), join(mnt, 'data/moved'))

  const [container] = JSON.parse(await cli(t, d, ['ps', '--json'])) as Array<{ id: string }>
  const upper = join(d.root, 'containers', container!.id, 'upper')
  const upperBig = lstatSync(join(upper, 'data/big'))
  t.equal(upperBig.size, BIG, 'the upper file has the full size')
  t.ok(upperBig.blocks * 512 < BIG / 16, `and no data (${upperBig.blocks} blocks)`)
  t.ok(lgetxattr(join(upper, 'data/big'), METACOPY) !== undefined, 'it carries the metacopy xattr')
  t.equal(lstatSync(join(mnt, 'data/big')).mode & 0o7777, 0o600, 'the mount shows the new mode')
  t.equal(sha(readFileSync(join(mnt, 'data/big'))), sha(big), 'and the lower data')
  const shown = snapshot(mnt)

  const diff = (await cli(t, d, ['diff', 'c1'])).split('\n').filter(Boolean)
  t.same(diff, ['C /data', 'C /data/big', 'A /data/moved', 'D /data/small'], 'diff shows the metadata changes and the move')

  await cli(t, d, ['commit', 'c1', 'mc:committed'])
  const [inspected] = JSON.parse(await cli(t, d, ['image', 'inspect', 'mc:committed'])) as Array<{ RootFS: { Layers: string[] } }>
  const layer = join(d.root, 'layers', inspected!.RootFS.Layers.at(-1)!.replace('sha256:', ''))
  const layerBig = lstatSync(join(layer, 'data/big'))
  t.equal(layerBig.blocks * 512 >= BIG, true, 'the committed layer holds the data')
  t.equal(lgetxattr(join(layer, 'data/big'), METACOPY), undefined, 'and no metacopy xattr')
  t.equal(sha(readFileSync(join(layer, 'data/big'))), sha(big), 'the lower data, byte for byte')
  t.equal(readFileSync(join(layer, 'data/moved'), 'utf8'), 'small\n', 'a moved metadata-only copy holds the data its redirect names')
  t.same([lgetxattr(join(upper, 'data/moved'), 'trusted.overlay.redirect')?.toString(), lgetxattr(join(layer, 'data/moved'), 'trusted.overlay.redirect')],
    ['small', undefined], 'the container\'s upper has the redirect, the layer none')

  const ro = d.dir('ro')
  await cli(t, d, ['mount', 'mc:committed', ro, '--read-only'])
  t.same(diffTrees(shown, snapshot(ro), { names: ['container', 'committed image'] }), [], 'the committed image shows what the container showed')
  await cli(t, d, ['umount', ro])
  await cli(t, d, ['umount', mnt])

  // The kernel, with metacopy=on, reads the same upper over the same layers as the same tree.
  const lowers = (inspected!.RootFS.Layers.slice(0, -1)).map((id) => join(d.root, 'layers', id.replace('sha256:', ''))).reverse()
  const kmnt = mountKernelOverlay(t, {
    lowerDirs: lowers,
    upperDir: upper,
    workDir: join(d.root, 'containers', container!.id, 'work'),
    options: ['metacopy=on']
  })
  t.same(diffTrees(shown, snapshot(kmnt), { names: ['stratafs', 'kernel'] }), [], 'kernel overlayfs shows the same tree')
})

t.test('with metacopy=on, a directory made in a merged one is marked opaque, as the kernel marks it; without, none is', async (t) => {
  // The directories that end up with the opaque marker, after the same mkdirs on one implementation.
  const marked = (mount: typeof mountStratafs, options: string[]): string[] => {
    const d = stackDirs(t, 'new-dirs')
    mkdirSync(join(d.lower, 'data'))
    writeFileSync(join(d.lower, 'data', 'f'), 'lower\n')
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work, options })
    mkdirSync(join(mnt, 'top'))
    mkdirSync(join(mnt, 'data', 'new'))
    mkdirSync(join(mnt, 'top', 'below'))
    return ['top', 'data', 'data/new', 'top/below'].filter(p => lgetxattr(join(d.upper, p), 'trusted.overlay.opaque')?.toString() === 'y')
  }
  for (const options of [['metacopy=on'], []]) {
    const kernel = marked(mountKernelOverlay, options)
    const label = options.length > 0 ? 'metacopy=on' : 'defaults'
    t.same(kernel, options.length > 0 ? ['top', 'data/new'] : [], `kernel, ${label}: ${options.length > 0 ? 'the directories made in merged ones, and only those' : 'none'}`)
    t.same(marked(mountStratafs, options), kernel, `stratafs, ${label}: the same`)
  }
})

t.test('an upper kernel overlayfs wrote with metacopy=on, whose renames and links left redirects, reads the same through stratafs', async (t) => {
  const d = stackDirs(t, 'redirect')
  mkdirSync(join(d.lower, 'd'))
  mkdirSync(join(d.lower, 'x'))
  writeFileSync(join(d.lower, 'd/c.txt'), 'c data\n')
  writeFileSync(join(d.lower, 'd/e.txt'), 'e data\n')
  writeFileSync(join(d.lower, 'd/g.txt'), 'g data\n')
  const layers = { lowerDirs: [d.lower], upperDir: d.upper, options: ['metacopy=on'] }

  const kmnt = mountKernelOverlay(t, { ...layers, workDir: freshWork(d, 'k1') })
  renameSync(join(kmnt, 'd/c.txt'), join(kmnt, 'd/c2'))
  renameSync(join(kmnt, 'd/e.txt'), join(kmnt, 'x/e2'))
  linkSync(join(kmnt, 'd/g.txt'), join(kmnt, 'x/g-link'))
  const kernel = snapshot(kmnt)
  t.equal(spawnSync('umount', [kmnt]).status, 0, 'the kernel mount ends')
  const redirect = (p: string): string | undefined => lgetxattr(join(d.upper, p), 'trusted.overlay.redirect')?.toString()
  t.same([redirect('d/c2'), redirect('x/e2')], ['c.txt', '/d/e.txt'], 'the kernel left a relative and an absolute redirect')
  t.ok(lgetxattr(join(d.upper, 'x/e2'), METACOPY) !== undefined, 'on metadata-only copies')

  const smnt = mountStratafs(t, { ...layers, workDir: freshWork(d, 's') })
  t.same(diffTrees(kernel, snapshot(smnt), { names: ['kernel', 'stratafs'] }), [], 'stratafs shows the tree the kernel showed')
  appendFileSync(join(smnt, 'x/e2'), 'appended\n')
  t.equal(readFileSync(join(smnt, 'x/e2'), 'utf8'), 'e data\nappended\n', 'a write gives the copy the redirected lower data first')
  const written = snapshot(smnt)
  t.equal(unmountFuse(smnt), undefined, 'stratafs unmounts')
  t.equal(lgetxattr(join(d.upper, 'x/e2'), METACOPY), undefined, 'the completed copy is no longer metadata-only')

  const again = mountKernelOverlay(t, { ...layers, workDir: freshWork(d, 'k2') })
  t.same(diffTrees(written, snapshot(again), { names: ['stratafs', 'kernel'] }), [], 'and the kernel reads what stratafs wrote')
})

t.test('a file made where a metadata-only copy was removed reads its own data, also in the inode the copy had', async (t) => {
  const d = stackDirs(t, 'reuse')
  const names = Array.from({ length: 20 }, (_, i) => `f${i}`)
  for (const name of names) writeFileSync(join(d.lower, name), `lower ${name}\n`)
  const mnt = mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work, options: ['metacopy=on'] })
  const copies = new Set<number>()
  for (const name of names) {
    chmodSync(join(mnt, name), 0o600)
    copies.add(lstatSync(join(d.upper, name)).ino)
  }
  for (const name of names) {
    unlinkSync(join(mnt, name))
    writeFileSync(join(mnt, name), `new ${name}\n`)
  }
  // The upper filesystem hands freed inode numbers out again (ext4 does, soon): the new files get
  // some of the copies' numbers, which is what this test is about.
  const reused = names.filter(name => copies.has(lstatSync(join(d.upper, name)).ino))
  t.ok(reused.length > 0, `new files took the inode numbers of removed copies (${reused.length} of ${names.length})`)
  t.same(names.map(name => readFileSync(join(mnt, name), 'utf8')), names.map(name => `new ${name}\n`), 'every new file reads what was written to it')
  t.same(names.map(name => lstatSync(join(mnt, name)).size), names.map(name => `new ${name}\n`.length), 'and shows its own size')
})

t.test('with metacopy=on, a rename, an exchange, a link or a chmod of a lower file (an empty one too) copies its metadata only and leaves the redirects kernel overlayfs leaves', async (t) => {
  const names = ['c', 'e', 'g', 'h', 'i', 'j']
  const data = new Map(names.map((n, i) => [n, randomBytes(64 * 1024 + i)]))
  // Each step on one mount; then what the upper holds and what the mount shows, per final name.
  const run = (mount: typeof mountStratafs): Record<string, unknown> => {
    const d = stackDirs(t, 'moves')
    mkdirSync(join(d.lower, 'd'))
    mkdirSync(join(d.lower, 'x'))
    for (const [n, bytes] of data) writeFileSync(join(d.lower, `d/${n}.txt`), bytes)
    writeFileSync(join(d.lower, 'd/empty'), '')
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work, options: ['metacopy=on'] })
    const at = (p: string): string => join(mnt, p)
    renameSync(at('d/c.txt'), at('d/c2'))
    renameSync(at('d/e.txt'), at('x/e2'))
    linkSync(at('d/g.txt'), at('x/g-link'))
    renameSync(at('d/h.txt'), at('d/h2'))
    renameSync(at('d/h2'), at('x/h3'))
    chmodSync(at('d/i.txt'), 0o600)
    renameSync(at('d/i.txt'), at('x/i2'))
    renameat2(at('d/j.txt'), at('x/e2'), RENAME_EXCHANGE)
    chmodSync(at('d/empty'), 0o600)
    const out: Record<string, unknown> = {}
    for (const p of ['d/c2', 'd/g.txt', 'x/g-link', 'x/h3', 'x/i2', 'x/e2', 'd/j.txt', 'd/empty']) {
      const upperFile = join(d.upper, p)
      out[p] = {
        redirect: lgetxattr(upperFile, 'trusted.overlay.redirect')?.toString(),
        metacopy: lgetxattr(upperFile, METACOPY) !== undefined,
        sha: sha(readFileSync(at(p))),
        blocks: lstatSync(at(p)).blocks
      }
    }
    return out
  }
  const kernel = run(mountKernelOverlay)
  t.match(kernel, {
    'd/c2': { redirect: 'c.txt', metacopy: true, sha: sha(data.get('c')!) },
    'x/e2': { redirect: '/d/j.txt', metacopy: true, sha: sha(data.get('j')!) },
    'd/j.txt': { redirect: '/d/e.txt', sha: sha(data.get('e')!) },
    'x/g-link': { redirect: '/d/g.txt', metacopy: true },
    'x/h3': { redirect: '/d/h.txt' },
    'x/i2': { redirect: '/d/i.txt' },
    'd/empty': { metacopy: true }
  }, 'kernel: metadata-only copies (of an empty file too) with relative and absolute redirects')
  t.same(run(mountStratafs), kernel, 'stratafs: the same copies, redirects, data and block counts')
})

t.test('metadata-only copies in an upper mounted without metacopy=on are listed and answer EPERM, as on kernel overlayfs', async (t) => {
  const d = stackDirs(t, 'unfollowed')
  writeFileSync(join(d.lower, 'meta'), 'lower data\n')
  writeFileSync(join(d.lower, 'whole'), 'lower data\n')
  const made = mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work, options: ['metacopy=on'] })
  chmodSync(join(made, 'meta'), 0o600)
  appendFileSync(join(made, 'whole'), 'more\n')
  t.equal(unmountFuse(made), undefined, 'the metacopy mount ends')
  t.ok(lgetxattr(join(d.upper, 'meta'), METACOPY) !== undefined, 'it left a metadata-only copy')

  const seen = (mount: typeof mountStratafs): string[] => {
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work })
    const code = (fn: () => unknown): string => {
      try {
        fn()
        return 'ok'
      } catch (err) {
        return (err as NodeJS.ErrnoException).code ?? String(err)
      }
    }
    const out = [readdirSync(mnt).sort().join(','), code(() => lstatSync(join(mnt, 'meta'))), code(() => readFileSync(join(mnt, 'meta'))), readFileSync(join(mnt, 'whole'), 'utf8')]
    if (mount === mountStratafs) unmountFuse(mnt)
    else spawnSync('umount', [mnt])
    return out
  }
  const kernel = seen(mountKernelOverlay)
  t.same(kernel, ['meta,whole', 'EPERM', 'EPERM', 'lower data\nmore\n'], 'kernel: the copy listed, and refused')
  t.same(seen(mountStratafs), kernel, 'stratafs: the same')
})

t.test('a metadata-only copy unlinked while open reads its lower data, also reopened through /proc, and takes a write there', async (t) => {
  const run = (mount: typeof mountStratafs): string[] => {
    const d = stackDirs(t, 'hidden-meta')
    writeFileSync(join(d.lower, 'f'), 'lower data\n')
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work, options: ['metacopy=on'] })
    chmodSync(join(mnt, 'f'), 0o600)
    const fd = openSync(join(mnt, 'f'), 'r')
    try {
      unlinkSync(join(mnt, 'f'))
      const reopened = `/proc/self/fd/${fd}`
      const out = [readFileSync(reopened, 'utf8')]
      appendFileSync(reopened, 'appended\n')
      out.push(readFileSync(reopened, 'utf8'), String(fstatSync(fd).size))
      return out
    } finally {
      closeSync(fd)
    }
  }
  const kernel = run(mountKernelOverlay)
  t.same(kernel, ['lower data\n', 'lower data\nappended\n', '20'], 'kernel: the lower data, then the write after it')
  t.same(run(mountStratafs), kernel, 'stratafs: the same')
})
