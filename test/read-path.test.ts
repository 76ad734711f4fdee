import t, { type Test as TapTest } from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { startDaemon, type Daemon } from './lib/daemon.js'
import { buildStack, kernelForm, randomStack, type LayerSpec } from './lib/layer-builder.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { diffTrees, snapshot, type Tree } from './lib/tree.js'

/**
 * The read path, differentially: an image mounted read-only through stratafs must look exactly
 * like kernel overlayfs mounted on the layer directories stratafs stored, to syscalls and to the
 * Unix tools people point at it. Everything that reads a mount runs in this process or a child
 * of it, never in the daemon serving it.
 */

type Test = TapTest

/** A hand-written stack covering every case in design.md §2 items 1–3, bottom first. */
function handStack (): LayerSpec[] {
  const big = Buffer.alloc(1_500_000)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff
  return [
    [
      { type: 'dir', path: 'etc', mtime: [1_650_000_000, 111_111_111] },
      { type: 'file', path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
      { type: 'file', path: 'etc/shadow', content: 'root:secret\n', mode: 0o600 },
      { type: 'file', path: 'etc/group', content: 'root:x:0:\n' },
      { type: 'file', path: 'etc/motd', content: 'base\n', mtime: [1_600_000_000, 999_999_999] },
      { type: 'file', path: 'usr/bin/tool', content: '#!/bin/sh\necho tool\n', mode: 0o755 },
      { type: 'hardlink', path: 'usr/bin/tool-alias', target: 'usr/bin/tool' },
      { type: 'file', path: 'usr/bin/su', content: 'setuid', mode: 0o4755 },
      { type: 'file', path: 'usr/lib/libx.so.1', content: 'ELF', xattrs: { 'user.origin': 'base', 'trusted.note': Buffer.from([0, 1, 2]) } },
      { type: 'symlink', path: 'usr/lib/libx.so', target: 'libx.so.1' },
      { type: 'file', path: 'usr/share/big.bin', content: big },
      { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
      { type: 'block', path: 'dev/sda', major: 8, minor: 0, mode: 0o660, gid: 6 },
      { type: 'fifo', path: 'run/ctl', mode: 0o620 },
      { type: 'dir', path: 'tmp', mode: 0o1777 },
      { type: 'dir', path: 'home/user', mode: 0o700, uid: 1000, gid: 1000 },
      { type: 'file', path: 'home/user/.profile', content: 'export A=1\n', uid: 1000, gid: 1000 },
      { type: 'file', path: 'var/cache/a', content: 'a' },
      { type: 'file', path: 'var/cache/b', content: 'b' },
      { type: 'file', path: 'var/log/old.log', content: 'old' },
      { type: 'file', path: 'opt/kopq/gone', content: 'hidden by a kernel opaque dir' },
      { type: 'file', path: 'opt/oopq/gone', content: 'hidden by an OCI opaque dir' },
      { type: 'file', path: 'srv', content: 'a file, later a directory' },
      { type: 'file', path: 'data/inner', content: 'a directory, later a file' },
      { type: 'file', path: 'docs/hello world.txt', content: 'spaces\n' },
      { type: 'file', path: 'docs/ünïcødé.txt', content: 'utf-8\n' }
    ],
    [
      { type: 'whiteout', path: 'etc/group', form: 'kernel' },
      { type: 'whiteout', path: 'var/cache/a', form: 'oci' },
      { type: 'whiteout', path: 'var/log', form: 'kernel' },
      { type: 'file', path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n' },
      { type: 'dir', path: 'opt/kopq', opaque: 'kernel' },
      { type: 'file', path: 'opt/kopq/new', content: 'kept' },
      { type: 'dir', path: 'opt/oopq', opaque: 'oci', mode: 0o750 },
      { type: 'file', path: 'opt/oopq/new', content: 'kept' },
      { type: 'file', path: 'srv/index.html', content: '<h1>hi</h1>\n' },
      { type: 'file', path: 'data', content: 'now a file' },
      { type: 'file', path: 'usr/lib/libx.so.1', content: 'ELF2', xattrs: { 'user.origin': 'middle' } }
    ],
    [
      { type: 'whiteout', path: 'var/cache', form: 'oci' },
      { type: 'dir', path: 'etc/group', mode: 0o700 },
      { type: 'file', path: 'etc/group/readme', content: 'a directory over a whiteout' },
      { type: 'symlink', path: 'usr/local', target: '/usr' },
      { type: 'file', path: 'app/main.js', content: 'console.log(1)\n', mtime: [1_700_000_001, 1] },
      { type: 'hardlink', path: 'app/index.js', target: 'app/main.js' },
      { type: 'file', path: 'app/empty', content: '' },
      { type: 'dir', path: 'app/conf', xattrs: { 'user.dir': 'yes' } }
    ]
  ]
}

interface Mounted {
  image: string
  fuse: string
  /** Kernel overlayfs on the layer dirs stratafs stored (from `image inspect`). */
  kernel: string
  /** Kernel overlayfs on the source dirs the test built (kernel form). */
  source: string
}

async function ok (t: Test, d: Daemon, args: string[]): Promise<string> {
  const r = await d.cli(args, { timeoutMs: 300_000 })
  if (r.code !== 0) t.fail(`stratafs ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`)
  return r.stdout
}

function lowerDirsOf (inspectJson: string): string[] {
  const parsed = JSON.parse(inspectJson) as unknown
  const img = (Array.isArray(parsed) ? parsed[0] : parsed) as { GraphDriver?: { Data?: { LowerDir?: string; UpperDir?: string } } }
  const lower = img.GraphDriver?.Data?.LowerDir
  if (lower === undefined) throw new Error(`image inspect has no GraphDriver.Data.LowerDir: ${inspectJson.slice(0, 400)}`)
  // A one-layer image may name its only layer UpperDir, as docker does.
  return lower === '' ? [img.GraphDriver!.Data!.UpperDir!] : lower.split(':')
}

async function importAll (t: Test, d: Daemon, dirs: string[]): Promise<string[]> {
  const digests: string[] = new Array(dirs.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < dirs.length) {
      const i = next++
      const out = await ok(t, d, ['layer', 'import', dirs[i]!])
      const m = /sha256:[0-9a-f]{64}/.exec(out)
      if (m === null) throw new Error(`layer import printed no digest: ${out}`)
      digests[i] = m[0]
    }
  }
  await Promise.all([worker(), worker(), worker()])
  return digests
}

/** Builds, imports and mounts `specs` three ways. */
async function mountStack (t: Test, d: Daemon, image: string, specs: LayerSpec[]): Promise<Mounted> {
  const work = d.dir('src')
  const dirs = buildStack(join(work, 'oci'), specs)
  const digests = await importAll(t, d, dirs)
  await ok(t, d, ['image', 'create', image, ...digests])
  const stored = lowerDirsOf(await ok(t, d, ['image', 'inspect', image]))
  t.equal(stored.length, specs.length, 'LowerDir names every layer')
  const fuse = d.dir('mnt')
  await ok(t, d, ['mount', image, fuse, '--read-only'])
  t.teardown(() => { spawnSync('umount', ['-l', fuse], { stdio: 'ignore' }) })
  const kernel = mountKernelOverlay(t, { lowerDirs: stored })
  const kdirs = dirs.map((dir, i) => kernelForm(dir, join(work, 'kernel', `l${i}`)))
  const source = mountKernelOverlay(t, { lowerDirs: [...kdirs].reverse() })
  return { image, fuse, kernel, source }
}

function sameTrees (t: Test, a: Tree, b: Tree, names: [string, string], what: string, ignoreGhosts: 'a' | 'both'): void {
  const diff = diffTrees(a, b, { names, ignoreGhosts })
  t.same(diff.slice(0, 60), [], `${what}${diff.length > 60 ? ` (${diff.length} differences, first 60 shown)` : ''}`)
}

function run (cmd: string, args: string[], cwd: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 1 << 28 })
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr }
}

/**
 * `ls -laR` with what legitimately differs taken out: totals, dir link counts, the mountpoint's
 * parent, column padding, and the kernel's ghost entries (see tree.ts), which stat cannot reach.
 */
function lsLaR (root: string): string {
  let section = ''
  return run('ls', ['-laR', '--time-style=full-iso', '.'], root).stdout.split('\n')
    .filter((l) => {
      if (l.endsWith(':')) section = l
      return !l.startsWith('total ') && !/^\S\?{9} /.test(l) && !(section === '.:' && l.endsWith(' ..'))
    })
    .map((l) => (l.startsWith('d') ? l.replace(/^(\S+)\s+\d+/, '$1 N') : l).replace(/ +/g, ' '))
    .join('\n')
}

/** getfattr's blocks in path order: it walks in readdir order, which may differ. */
function xattrDump (root: string): string {
  return run('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '.'], root).stdout.split('\n\n').filter(Boolean).sort().join('\n\n')
}

function toolsAgree (t: Test, kernel: string, fuse: string): void {
  t.equal(lsLaR(fuse), lsLaR(kernel), 'ls -laR')
  const find = (root: string): string =>
    run('find', ['.', '-printf', '%y %m %u %g %s %p %l\n'], root).stdout.split('\n').sort().join('\n')
  t.equal(find(fuse), find(kernel), 'find -printf')
  const tarList = (root: string): string => {
    const c = spawnSync('tar', ['-C', root, '--sort=name', '--xattrs', '--xattrs-include=*', '-cf', '-', '.'], { maxBuffer: 1 << 30 })
    const l = spawnSync('tar', ['-tvf', '-', '--full-time'], { input: c.stdout, encoding: 'utf8', maxBuffer: 1 << 28 })
    return l.stdout
  }
  t.equal(tarList(fuse), tarList(kernel), 'tar -c | tar -tv')
  const du = (root: string): string => run('du', ['-s', '--apparent-size', '-b', '.'], root).stdout
  t.equal(du(fuse), du(kernel), 'du -s --apparent-size')
  t.equal(xattrDump(fuse), xattrDump(kernel), 'getfattr -R')
}

function inodesStable (t: Test, mnt: string, tree: Tree): void {
  const statIno = (paths: string[]): string[] => run('stat', ['-c', '%i', ...paths], mnt).stdout.trim().split('\n')
  const paths = [...tree.keys()].filter((p) => p !== '/' && tree.get(p)!.type !== 'ghost').map((p) => '.' + p)
  const first = statIno(paths)
  t.same(statIno(paths), first, 'st_ino stable across two stats')
  const ino = new Map(paths.map((p, i) => [p, first[i]]))
  const groups = new Set([...tree.values()].flatMap((n) => n.linkGroup !== undefined ? [n.linkGroup.join('\0')] : []))
  for (const g of groups) {
    const members = g.split('\0')
    t.equal(new Set(members.map((p) => ino.get('.' + p))).size, 1, `hard links share st_ino: ${members.join(', ')}`)
  }
}

t.test('read-only mounts of 1-, 3- and 128-layer images match kernel overlayfs', async (t) => {
  const d = await startDaemon(t)
  const stacks: Array<[string, LayerSpec[]]> = [
    ['hand:3', handStack()],
    ['rand:1', randomStack(101, 1)],
    ['rand:3', randomStack(303, 3)],
    ['rand:128', randomStack(12_800, 128, { entriesPerLayer: 8 })]
  ]
  for (const [image, specs] of stacks) {
    await t.test(image, async (t) => {
      const m = await mountStack(t, d, image, specs)
      const kernel = snapshot(m.kernel)
      const fuse = snapshot(m.fuse)
      sameTrees(t, kernel, fuse, ['kernel', 'stratafs'], 'stratafs mount equals kernel overlayfs on the stored layers', 'a')
      // Both sides are kernel views, and which whiteouts the kernel leaks as ghosts varied run to run.
      sameTrees(t, snapshot(m.source), kernel, ['source', 'stored'], 'stored layers reproduce the source layers', 'both')
      toolsAgree(t, m.kernel, m.fuse)
      inodesStable(t, m.fuse, fuse)
      await ok(t, d, ['umount', m.fuse])
    })
  }
})

t.test('the hand stack through the tools people use', async (t) => {
  const d = await startDaemon(t)
  // The permission check below runs as nobody, who must be able to walk down to the mount.
  chmodSync(d.base, 0o755)
  const m = await mountStack(t, d, 'hand:3', handStack())
  const { fuse } = m

  await t.test('content, links and attributes', async (t) => {
    t.equal(run('cat', ['etc/passwd'], fuse).stdout, 'root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n', 'cat sees the top copy')
    t.equal(run('readlink', ['usr/lib/libx.so'], fuse).stdout, 'libx.so.1\n', 'readlink')
    t.equal(run('cat', ['usr/lib/libx.so'], fuse).stdout, 'ELF2', 'cat through a relative symlink')
    t.match(run('getfattr', ['-n', 'user.origin', '--only-values', 'usr/lib/libx.so.1'], fuse).stdout, /^middle$/, 'getfattr of the top copy')
    t.equal(run('cmp', ['usr/share/big.bin', join(m.kernel, 'usr/share/big.bin')], fuse).code, 0, 'a 1.5 MB file reads back byte for byte')
    t.equal(run('stat', ['-c', '%F %t:%T', 'dev/null', 'dev/sda'], fuse).stdout, 'character special file 1:3\nblock special file 8:0\n', 'device numbers')
    t.equal(run('stat', ['-c', '%F', 'run/ctl'], fuse).stdout, 'fifo\n', 'fifo')
    t.equal(run('stat', ['-c', '%A', 'usr/bin/su', 'tmp'], fuse).stdout, '-rwsr-xr-x\ndrwxrwxrwt\n', 'setuid and sticky bits')
    t.equal(run('stat', ['-c', '%y', 'etc/motd'], fuse).stdout, run('stat', ['-c', '%y', 'etc/motd'], m.kernel).stdout, 'nanosecond mtime')
  })

  await t.test('hidden names stay hidden', async (t) => {
    for (const p of ['etc/group/readme', 'srv/index.html', 'opt/kopq/new', 'opt/oopq/new']) t.ok(existsSync(join(fuse, p)), `${p} visible`)
    for (const p of ['var/cache', 'var/log', 'opt/kopq/gone', 'opt/oopq/gone', 'data/inner', 'opt/oopq/.wh..wh..opq', 'var/.wh.cache']) {
      t.notOk(existsSync(join(fuse, p)), `${p} hidden`)
    }
    t.same(run('ls', ['-A', 'var'], fuse).stdout, '', 'a directory whose every entry is whited out lists empty')
  })

  await t.test('every mutation fails with EROFS', async (t) => {
    const mutations: string[][] = [
      ['touch', 'new-file'], ['touch', 'etc/passwd'], ['mkdir', 'newdir'], ['rm', 'etc/passwd'], ['rm', '-r', 'app/conf'],
      ['rmdir', 'app/conf'], ['mv', 'etc/passwd', 'etc/passwd2'], ['chmod', '600', 'etc/passwd'], ['chown', '1:1', 'etc/passwd'],
      ['ln', 'etc/passwd', 'hard'], ['ln', '-s', 'etc/passwd', 'soft'], ['setfattr', '-n', 'user.x', '-v', '1', 'etc/passwd'],
      ['setfattr', '-x', 'user.origin', 'usr/lib/libx.so.1'], ['truncate', '-s', '0', 'etc/passwd'], ['mknod', 'p', 'p'],
      ['sh', '-c', 'echo x >> etc/passwd'], ['sh', '-c', 'echo x > fresh']
    ]
    for (const cmd of mutations) {
      const r = run(cmd[0]!, cmd.slice(1), fuse)
      t.not(r.code, 0, `${cmd.join(' ')} fails`)
      t.match(r.stderr, /Read-only file system/, `${cmd.join(' ')}: EROFS`)
    }
    t.equal(run('cat', ['etc/passwd'], fuse).stdout.split('\n').length, 3, 'etc/passwd unchanged')
  })

  await t.test('statfs answers', async (t) => {
    t.equal(run('df', [fuse], fuse).code, 0, 'df')
    const r = run('stat', ['-f', '-c', '%b %S', fuse], fuse)
    t.equal(r.code, 0, 'stat -f')
    t.match(r.stdout, /^\d+ \d+\n$/)
  })

  await t.test('permission checks follow the attributes shown', async (t) => {
    const asNobody = (...args: string[]): ReturnType<typeof run> =>
      run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...args], fuse)
    const allowed = asNobody('cat', join(fuse, 'etc/passwd'))
    t.equal(allowed.code, 0, `nobody reads a 0644 file ${allowed.stderr.trim()}`)
    const denied = asNobody('cat', join(fuse, 'etc/shadow'))
    t.not(denied.code, 0, 'nobody cannot read a 0600 root file')
    t.match(denied.stderr, /Permission denied/, 'EACCES')
    t.match(asNobody('ls', join(fuse, 'home/user')).stderr, /Permission denied/, 'nor list a 0700 dir of another user')
    const kernelDenied = run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', join(m.kernel, 'etc/shadow')], fuse)
    t.match(kernelDenied.stderr, /Permission denied/, 'as on kernel overlayfs')
  })

  await t.test('several mounts at once, listed by ps', async (t) => {
    const second = d.dir('mnt')
    const third = d.dir('mnt')
    await ok(t, d, ['mount', 'hand:3', second, '--read-only'])
    const other = buildStack(d.dir('other'), [[{ type: 'file', path: 'only-here', content: 'other image' }]])
    const digest = /sha256:[0-9a-f]{64}/.exec(await ok(t, d, ['layer', 'import', other[0]!]))![0]
    await ok(t, d, ['image', 'create', 'other:1', digest])
    await ok(t, d, ['mount', 'other:1', third, '--read-only'])
    t.teardown(() => { for (const mp of [second, third]) spawnSync('umount', ['-l', mp], { stdio: 'ignore' }) })
    t.equal(run('cat', ['only-here'], third).stdout, 'other image', 'the other image is mounted')
    t.same(diffTrees(snapshot(fuse), snapshot(second), { root: false }), [], 'two mounts of one image agree')
    const ps = await ok(t, d, ['ps'])
    for (const mp of [fuse, second, third]) t.match(ps, mp, `ps lists ${mp}`)
    await ok(t, d, ['umount', second])
    await ok(t, d, ['umount', third])
    t.equal(run('cat', ['etc/passwd'], fuse).code, 0, 'the first mount still serves after the others go')
  })
  await ok(t, d, ['umount', fuse])
})
