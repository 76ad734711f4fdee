import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { repoDir } from './lib/daemon.js'
import { diffTrees, snapshot } from './lib/tree.js'

/**
 * Issue 4: `stratafs-overlay` as podman's `mount_program`, driven by podman itself. Containers
 * run on it, and an image that `podman build` makes on it is, file for file, the image podman
 * makes with its own overlay driver on kernel overlayfs.
 */

const bin = join(repoDir, 'bin', 'stratafs-overlay')

type Tap = Parameters<Parameters<typeof t.test>[1]>[0]

/** One podman with its own store: `mountProgram` undefined for podman's own kernel overlay mounts. */
type Podman = (args: string[]) => { status: number | null, stdout: string, stderr: string }

function podman (t: Tap, dir: string, mountProgram?: string): Podman {
  const root = join(dir, 'root')
  // podman takes no run root longer than 50 characters.
  const run = mkdtempSync(join(tmpdir(), 'podman-'))
  const global = [
    '--root', root, '--runroot', join(run, 'run'), '--tmpdir', join(run, 'tmp'),
    '--storage-driver', 'overlay', '--events-backend', 'none',
    // crun refuses hosts whose cgroups are in hybrid mode; runc with cgroupfs runs on any.
    '--runtime', 'runc', '--cgroup-manager', 'cgroupfs',
    ...(mountProgram === undefined ? [] : ['--storage-opt', `overlay.mount_program=${mountProgram}`])
  ]
  // tap puts its loader hooks into NODE_OPTIONS of every child; the mount program must not get them.
  const p: Podman = (args) => {
    const r = spawnSync('env', ['-u', 'NODE_OPTIONS', 'podman', ...global, ...args], { encoding: 'utf8', timeout: 120_000 })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  t.teardown(() => {
    p(['rm', '--all', '--force'])
    p(['rmi', '--all', '--force'])
    if (mountsUnder(run).length === 0) rmSync(run, { recursive: true, force: true })
  })
  return p
}

/** Limits any host can grant (podman's default nofile is above many hard limits), and no network. */
const RUN = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', '--network', 'none']

/** A busybox root filesystem as a tar, for `podman import`. */
function busyboxTar (dir: string): string {
  const rootfs = join(dir, 'rootfs')
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev']) mkdirSync(join(rootfs, d), { recursive: true })
  copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'))
  for (const applet of ['sh', 'ls', 'cat', 'echo', 'mkdir', 'rm', 'mv', 'ln', 'chmod', 'awk', 'stat', 'sleep']) {
    symlinkSync('busybox', join(rootfs, 'bin', applet))
  }
  writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n')
  writeFileSync(join(rootfs, 'etc', 'motd'), 'hello\n')
  const tar = join(dir, 'rootfs.tar')
  spawnSync('tar', ['-C', rootfs, '-cf', tar, '.'])
  return tar
}

function ok (t: Tap, p: Podman, args: string[], what: string): string {
  const r = p(args)
  t.equal(r.status, 0, r.status === 0 ? what : `${what}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  return r.stdout
}

/** FUSE and overlay mounts below `dir`. */
function mountsUnder (dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map(l => l.split(' ')[4] ?? '').filter(m => m.startsWith(dir + '/'))
}

t.test('a container runs on stratafs-overlay, and podman leaves nothing mounted', async t => {
  const dir = t.testdir()
  const p = podman(t, join(dir, 'stratafs'), bin)
  ok(t, p, ['import', busyboxTar(dir), 'localhost/bb'], 'podman import')
  const out = ok(t, p, ['run', '--rm', ...RUN, 'localhost/bb', 'sh', '-c', [
    // The root's filesystem type, from the container's own mount table.
    'awk \'$5 == "/" { for (i = 7; $i != "-"; i++); print $(i + 1) }\' /proc/self/mountinfo',
    'echo more >> /etc/motd', 'cat /etc/motd',
    'rm /bin/ls', '[ -e /bin/ls ] && echo there || echo gone',
    'mkdir -p /new/dir', 'echo x > /new/dir/f', 'cat /new/dir/f'
  ].join('; ')], 'podman run')
  t.same(out.trim().split('\n'), [
    'fuse.stratafs',
    'hello', 'more',
    'gone',
    'x'
  ], 'the root is a stratafs mount; copy-up, whiteout and new names work')
  t.same(mountsUnder(dir), [], 'the container gone, nothing stays mounted')
  const second = ok(t, p, ['run', '--rm', ...RUN, 'localhost/bb', 'cat', '/etc/motd'], 'a second container')
  t.equal(second, 'hello\n', 'starts from the image, not from the first container')
})

t.test('podman build on stratafs-overlay makes the image kernel overlayfs makes', async t => {
  const dir = t.testdir()
  const tar = busyboxTar(dir)
  const ctx = join(dir, 'ctx')
  mkdirSync(ctx)
  writeFileSync(join(ctx, 'Containerfile'), [
    'FROM localhost/bb',
    // A lower file removed and one changed, a directory made in a layer...
    'RUN rm /etc/motd && echo more >> /etc/passwd && mkdir -p /d/sub && echo one > /d/f && echo deep > /d/sub/x',
    // ...removed in the next and made again (opaque), a setuid bit, a rename and a symlink.
    'RUN rm -rf /d && mkdir /d && echo two > /d/g && chmod 4755 /bin/busybox',
    'RUN mv /etc/passwd /etc/passwd.old && ln -s passwd.old /etc/passwd && echo app > /tmp/app',
    ''
  ].join('\n'))
  const trees = []
  for (const [name, program] of [['kernel', undefined], ['stratafs', bin]] as const) {
    const p = podman(t, join(dir, name), program)
    ok(t, p, ['import', tar, 'localhost/bb'], `${name}: podman import`)
    ok(t, p, ['build', ...RUN, '--tag', 'localhost/built', ctx], `${name}: podman build`)
    const id = ok(t, p, ['create', 'localhost/built', 'true'], `${name}: podman create`).trim()
    const exported = join(dir, `${name}.tar`)
    ok(t, p, ['export', '--output', exported, id], `${name}: podman export`)
    const tree = join(dir, `${name}-tree`)
    mkdirSync(tree)
    t.equal(spawnSync('tar', ['-C', tree, '-xpf', exported]).status, 0, `${name}: export unpacked`)
    trees.push(snapshot(tree))
  }
  const [kernel, stratafs] = trees
  t.ok(stratafs!.has('/d/g') && !stratafs!.has('/d/sub') && !stratafs!.has('/etc/motd'), 'the build steps show')
  // Both builds ran at their own moment: names, types, modes, owners, sizes, contents and
  // targets are compared, not times.
  t.same(diffTrees(kernel!, stratafs!, { names: ['kernel', 'stratafs'], mtime: false }), [], 'the same files')
  t.same(mountsUnder(dir), [], 'nothing stays mounted')
})
