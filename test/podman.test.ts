import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import { makedev, mknod } from '../src/sys/index.js'
import { repoDir } from './lib/daemon.js'
import { diffTrees, snapshot } from './lib/tree.js'
import type { Tap } from './lib/tap.js'

/**
 * Issue 4: `stratafs-overlay` as podman's `mount_program`, driven by podman itself. Containers
 * run on it, and an image that `podman build` makes on it is, file for file, the image podman
 * makes with its own overlay driver on kernel overlayfs.
 */

const bin = join(repoDir, 'bin', 'stratafs-overlay')

/** One podman with its own store. */
type Podman = (args: string[]) => { status: number | null, stdout: string, stderr: string }

interface PodmanOptions {
  /** undefined: podman's own overlay driver on kernel overlayfs. */
  mountProgram?: string
  /** As nobody, in podman's own user namespace (see Rootless). */
  rootless?: Rootless
}

/**
 * What a rootless podman needs here: a home of nobody's, /dev/fuse open to everyone (as Debian's
 * udev rule makes it; some hosts keep it root's), and the repo where nobody can reach it.
 * Both are bind mounts in a mount namespace of podman's own, so the host sees no change.
 */
interface Rootless {
  home: string
  /** podman's run root and tmp dir go here: a run root must be short. */
  runDir: string
  /** The repo, bind-mounted where nobody reaches it, and its bin/stratafs-overlay. */
  repo: string
  bin: string
  /** podman's pause process, which holds its user namespace and its mounts. */
  pause (): number | undefined
  wrap (podmanArgs: string[]): string[]
}

/**
 * `subids`: nobody also gets 65,536 ids of its own, as /etc/subuid and /etc/subgid grant a user,
 * so that podman's user namespace maps more than nobody itself (needed for `--userns=keep-id`).
 * Those two files are put over the host's /etc in the same mount namespace only.
 */
function rootless (t: Tap, { subids = false } = {}): Rootless {
  const home = mkdtempSync(join(tmpdir(), 'podman-rootless-'))
  const repo = join(home, 'repo')
  mkdirSync(repo)
  const binds = [`mount --bind ${repoDir} ${repo}`]
  if (subids) {
    const etc = join(home, 'etc')
    mkdirSync(etc)
    for (const file of ['subuid', 'subgid']) writeFileSync(join(etc, file), 'nobody:100000:65536\n')
    binds.push(`mount -t overlay overlay -o lowerdir=${etc}:/etc /etc`)
  }
  if ((statSync('/dev/fuse').mode & 0o006) !== 0o006) {
    const fuse = join(home, 'fuse')
    mknod(fuse, 0o20666, makedev(10, 229))
    chmodSync(fuse, 0o666)
    binds.push(`mount --bind ${fuse} /dev/fuse`)
  }
  const runDir = join(home, 'tmp')
  for (const d of [join(home, 'run'), runDir]) mkdirSync(d, { mode: 0o700 })
  spawnSync('chown', ['-R', 'nobody:nogroup', home])
  const env = [`HOME=${home}`, `XDG_RUNTIME_DIR=${join(home, 'run')}`, `XDG_CONFIG_HOME=${home}/config`, `PATH=${dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`]
  /** From podman's tmp dir (`--tmpdir`, see podman()); none before podman first ran. */
  const pause = (): number | undefined => {
    const file = join(runDir, 'tmp', 'pause.pid')
    const pid = existsSync(file) ? Number(readFileSync(file, 'utf8')) : NaN
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  }
  t.teardown(() => {
    const pid = pause()
    if (pid !== undefined) {
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
    rmSync(home, { recursive: true, force: true })
  })
  return {
    home,
    runDir,
    repo,
    bin: join(repo, 'bin', 'stratafs-overlay'),
    pause,
    wrap: args => ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
      `${binds.join(' && ')} && exec setpriv --reuid=nobody --regid=nogroup --clear-groups env -i ${env.join(' ')} podman "$@"`, 'sh', ...args]
  }
}

function podman (t: Tap, dir: string, opts: PodmanOptions = {}): Podman {
  const root = join(dir, 'root')
  // podman takes no run root longer than 50 characters.
  const run = opts.rootless?.runDir ?? mkdtempSync(join(tmpdir(), 'podman-'))
  const global = [
    '--root', root, '--runroot', join(run, 'run'), '--tmpdir', join(run, 'tmp'),
    '--storage-driver', 'overlay', '--events-backend', 'none',
    // crun refuses hosts whose cgroups are in hybrid mode; runc with cgroupfs runs on any.
    '--runtime', 'runc', '--cgroup-manager', 'cgroupfs',
    ...(opts.mountProgram === undefined ? [] : ['--storage-opt', `overlay.mount_program=${opts.mountProgram}`])
  ]
  // tap puts its loader hooks into NODE_OPTIONS of every child; the mount program must not get them.
  const command = opts.rootless?.wrap(global) ?? ['env', '-u', 'NODE_OPTIONS', 'podman', ...global]
  const p: Podman = (args) => {
    const r = spawnSync(command[0]!, [...command.slice(1), ...args], { encoding: 'utf8', timeout: 120_000 })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  t.teardown(() => {
    p(['rm', '--all', '--force'])
    p(['rmi', '--all', '--force'])
    if (opts.rootless === undefined && mountsUnder(run).length === 0) rmSync(run, { recursive: true, force: true })
  })
  return p
}

/** Limits any host can grant (podman's default nofile is above many hard limits), and no network. */
const RUN = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', '--network', 'none']

/**
 * A busybox root filesystem as a tar, for `podman import`. `withUser`: also a home of nobody's
 * (65534), which a container run as that user writes in; a user namespace that maps nobody
 * alone cannot import it.
 */
function busyboxTar (dir: string, withUser = false): string {
  const rootfs = join(dir, 'rootfs')
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev']) mkdirSync(join(rootfs, d), { recursive: true })
  copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'))
  for (const applet of ['sh', 'ls', 'cat', 'echo', 'mkdir', 'rm', 'mv', 'ln', 'chmod', 'awk', 'stat', 'sleep', 'id']) {
    symlinkSync('busybox', join(rootfs, 'bin', applet))
  }
  writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n')
  writeFileSync(join(rootfs, 'etc', 'motd'), 'hello\n')
  mkdirSync(join(rootfs, 'data'))
  writeFileSync(join(rootfs, 'data', 'old'), 'old\n')
  if (withUser) {
    const user = join(rootfs, 'home', 'user')
    mkdirSync(user, { recursive: true })
    writeFileSync(join(user, 'notes'), 'notes\n')
    writeFileSync(join(user, 'old'), 'old\n')
    spawnSync('chown', ['-R', '65534:65534', user])
  }
  const tar = join(dir, 'rootfs.tar')
  spawnSync('tar', ['-C', rootfs, '-cf', tar, '.'])
  return tar
}

function ok (t: Tap, p: Podman, args: string[], what: string): string {
  const r = p(args)
  t.equal(r.status, 0, r.status === 0 ? what : `${what}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  return r.stdout
}

/** The files of container `id`, as `podman export` writes them, unpacked under `dir`. */
function exportTree (t: Tap, p: Podman, dir: string, name: string, id: string): ReturnType<typeof snapshot> {
  const exported = join(dir, `${name}.tar`)
  ok(t, p, ['export', '--output', exported, id], `${name}: podman export`)
  const tree = join(dir, `${name}-tree`)
  mkdirSync(tree)
  t.equal(spawnSync('tar', ['-C', tree, '-xpf', exported]).status, 0, `${name}: export unpacked`)
  return snapshot(tree)
}

/** FUSE and overlay mounts below `dir`, in the mount namespace of `pid`. */
function mountsUnder (dir: string, pid: number | 'self' = 'self'): string[] {
  return readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').map(l => l.split(' ')[4] ?? '').filter(m => m.startsWith(dir + '/'))
}

/** Where a test keeps podman's stores and inputs, and how podman runs there. */
interface Mode {
  name: string
  dir: string
  bin: string
  rootless?: Rootless
  /** Mounts below `dir`, where podman makes them: the host's namespace, or its own. */
  mounts (): string[]
}

function mode (t: Tap, asRootless: boolean, subids = false): Mode {
  if (!asRootless) {
    const dir = t.testdir()
    return { name: 'root', dir, bin, mounts: () => mountsUnder(dir) }
  }
  const r = rootless(t, { subids })
  return {
    name: 'rootless',
    dir: r.home,
    bin: r.bin,
    rootless: r,
    mounts: () => {
      const pid = r.pause()
      // The repo's own bind mount (see rootless) stays for as long as the namespace.
      return pid === undefined ? [] : mountsUnder(r.home, pid).filter(mnt => mnt !== r.repo)
    }
  }
}

for (const asRootless of [false, true]) {
  t.test(`${asRootless ? 'rootless' : 'as root'}: a container runs on stratafs-overlay, and podman leaves nothing mounted`, async t => {
    const m = mode(t, asRootless)
    const p = podman(t, join(m.dir, 'stratafs'), { mountProgram: m.bin, rootless: m.rootless })
    ok(t, p, ['import', busyboxTar(m.dir), 'localhost/bb'], 'podman import')
    const out = ok(t, p, ['run', '--rm', ...RUN, 'localhost/bb', 'sh', '-c', [
      // The root's filesystem type, from the container's own mount table.
      'awk \'$5 == "/" { for (i = 7; $i != "-"; i++); print $(i + 1) }\' /proc/self/mountinfo',
      'echo more >> /etc/motd', 'cat /etc/motd',
      'rm /bin/ls', '[ -e /bin/ls ] && echo there || echo gone',
      // A directory removed and made again: opaque, which takes an xattr of the overlay's own.
      'rm -rf /data', 'mkdir /data', 'echo new > /data/new', 'ls /data',
      'mkdir -p /new/dir', 'echo x > /new/dir/f', 'cat /new/dir/f'
    ].join('; ')], 'podman run')
    t.same(out.trim().split('\n'), [
      'fuse.stratafs',
      'hello', 'more',
      'gone',
      'new',
      'x'
    ], 'the root is a stratafs mount; copy-up, whiteout, opaque directory and new names work')
    t.same(m.mounts(), [], 'the container gone, nothing stays mounted')
    const second = ok(t, p, ['run', '--rm', ...RUN, 'localhost/bb', 'cat', '/etc/motd', '/data/old'], 'a second container')
    t.equal(second, 'hello\nold\n', 'starts from the image, not from the first container')
  })

  t.test(`${asRootless ? 'rootless' : 'as root'}: podman build on stratafs-overlay makes the image podman's own overlay driver makes`, async t => {
    const m = mode(t, asRootless)
    const tar = busyboxTar(m.dir)
    const ctx = join(m.dir, 'ctx')
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
    if (m.rootless !== undefined) spawnSync('chown', ['-R', 'nobody:nogroup', m.dir])
    const trees = []
    for (const [name, program] of [['kernel', undefined], ['stratafs', m.bin]] as const) {
      const p = podman(t, join(m.dir, name), { mountProgram: program, rootless: m.rootless })
      ok(t, p, ['import', tar, 'localhost/bb'], `${name}: podman import`)
      ok(t, p, ['build', ...RUN, '--tag', 'localhost/built', ctx], `${name}: podman build`)
      const id = ok(t, p, ['create', 'localhost/built', 'true'], `${name}: podman create`).trim()
      trees.push(exportTree(t, p, m.dir, name, id))
    }
    const [kernel, stratafs] = trees
    t.ok(stratafs!.has('/d/g') && !stratafs!.has('/d/sub') && !stratafs!.has('/etc/motd'), 'the build steps show')
    // Both builds ran at their own moment: names, types, modes, owners, sizes, contents and
    // targets are compared, not times.
    t.same(diffTrees(kernel!, stratafs!, { names: ['kernel', 'stratafs'], mtime: false }), [], 'the same files')
    t.same(m.mounts(), [], 'nothing stays mounted')
  })
}

t.test('rootless, --userns=keep-id: the container runs as its user, who sees and makes files as on podman\'s own driver', async t => {
  const m = mode(t, true, true)
  const r = m.rootless!
  const tar = busyboxTar(m.dir, true)
  spawnSync('chown', ['-R', 'nobody:nogroup', m.dir])
  const script = [
    'id -u', 'id -g',
    'stat -c "%u:%g %a %n" /etc/motd /home/user /home/user/notes',
    // A copy-up of the user's own file, new names, a removal, and a write the user may not make.
    'echo more >> /home/user/notes', 'cat /home/user/notes',
    'echo new > /home/user/new', 'mkdir /home/user/dir', 'rm /home/user/old',
    'stat -c "%u:%g %a %n" /home/user/notes /home/user/new /home/user/dir',
    '(echo no >> /etc/motd) 2>&1',
    'ls /home/user'
  ].join('; ')
  const seen: string[] = []
  const trees = []
  for (const [name, program] of [['kernel', undefined], ['stratafs', r.bin]] as const) {
    const p = podman(t, join(m.dir, name), { mountProgram: program, rootless: r })
    ok(t, p, ['import', tar, 'localhost/bb'], `${name}: podman import`)
    const id = ok(t, p, ['create', ...RUN, '--userns=keep-id', 'localhost/bb', 'sh', '-c', script], `${name}: podman create --userns=keep-id`).trim()
    seen.push(ok(t, p, ['start', '--attach', id], `${name}: the container ran`))
    trees.push(exportTree(t, p, m.dir, name, id))
  }
  const [kernel, stratafs] = seen
  t.same(stratafs!.split('\n').slice(0, 5), [
    '65534', '65534',
    '0:0 644 /etc/motd', '65534:65534 755 /home/user', '65534:65534 644 /home/user/notes'
  ], 'the user is nobody, the image\'s files keep their owners')
  t.match(stratafs!, /65534:65534 644 \/home\/user\/new\n65534:65534 755 \/home\/user\/dir\n.*Permission denied/, 'what the user makes is the user\'s; a root file stays closed to it')
  t.equal(stratafs, kernel, 'the container saw what it sees on podman\'s own driver')
  t.same(diffTrees(trees[0]!, trees[1]!, { names: ['kernel', 'stratafs'], mtime: false }), [], 'the containers\' files are the same')
  t.same(m.mounts(), [], 'nothing stays mounted')
})
