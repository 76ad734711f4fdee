import t from 'tap'
import { spawnSync, type SpawnSyncOptions } from 'node:child_process'
import {
  chmodSync, closeSync, copyFileSync, fchmodSync, fstatSync, linkSync, lstatSync, mkdirSync, mkdtempSync, openSync, readSync,
  rmdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync, writeSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { errorCode } from '../src/errors.js'
import { renameat2, RENAME_EXCHANGE, RENAME_NOREPLACE } from '../src/sys/index.js'
import { startDaemon } from './lib/daemon.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { buildLayer, type LayerSpec } from './lib/layer-builder.js'
import { diffTrees, snapshot, type Tree } from './lib/tree.js'

/**
 * Issue 3: everyday Unix tools on a container mounted by the daemon behave as they do on kernel
 * overlayfs over the same layers; the container's diff and commit show what the tools did;
 * permissions, inode numbers and unlinked-open files hold up for a process that is not root.
 */

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups']

const BASE: LayerSpec = [
  { type: 'file', path: 'etc/config.txt', content: 'color=red\nsize=1\nshape=round\n' },
  { type: 'file', path: 'etc/motd', content: 'hello\n' },
  ...['a', 'b', 'c'].flatMap((d): LayerSpec => [
    { type: 'file', path: `usr/share/tree/${d}/one`, content: `${d}1` },
    { type: 'file', path: `usr/share/tree/${d}/two`, content: Buffer.alloc(20_000, d) }
  ]),
  { type: 'symlink', path: 'usr/share/tree/link', target: 'a/one' },
  { type: 'file', path: 'opt/app/bin/run', content: '#!/bin/sh\necho run\n', mode: 0o755 },
  { type: 'file', path: 'opt/app/lib/a.so', content: Buffer.alloc(50_000, 'a') },
  { type: 'file', path: 'opt/app/lib/b.so', content: 'b', xattrs: { 'user.origin': 'base' } },
  { type: 'symlink', path: 'opt/app/current', target: 'bin/run' },
  { type: 'file', path: 'data/x1', content: 'old x1\n' },
  { type: 'file', path: 'data/x2', content: 'old x2\n' },
  { type: 'file', path: 'proj/README', content: 'a project\n' },
  { type: 'file', path: 'proj/src/main.c', content: 'int main(void) { return 0; }\n' },
  { type: 'dir', path: 'perm/a/b', mode: 0o775 },
  { type: 'file', path: 'perm/a/b/c', content: 'c', mode: 0o666 },
  { type: 'file', path: 'perm/top', content: 't', mode: 0o777 },
  { type: 'file', path: 'root/secret', content: 'top secret\n', mode: 0o600 },
  { type: 'dir', path: 'root', mode: 0o755 },
  { type: 'dir', path: 'locked', mode: 0o755 },
  { type: 'dir', path: 'shared', mode: 0o1777 },
  { type: 'file', path: 'var/ino-test', content: 'lower\n' },
  { type: 'file', path: 'var/open-unlink', content: 'lower content\n' },
  { type: 'file', path: 'var/gone-later', content: 'hidden by the next layer\n' },
  { type: 'file', path: 'acl/again', content: 'deleted, then made again\n' }
]

const TOP: LayerSpec = [
  { type: 'file', path: 'etc/motd', content: 'hello from the top layer\n' },
  { type: 'whiteout', path: 'var/gone-later', form: 'kernel' },
  { type: 'file', path: 'opt/app/lib/c.so', content: 'c' }
]

const C_PROGRAM = `#include <stdio.h>
int main(void) { FILE *f = fopen("out.txt", "w"); fprintf(f, "written by C\\n"); fclose(f); puts("hello from C"); return 0; }
`

/** Steps run with the mount as cwd, the same on kernel overlayfs and on stratafs. */
function toolSteps (outside: string): Array<[string, string]> {
  return [
    ['sed -i on a lower file', 'sed -i s/red/blue/ etc/config.txt && grep -q color=blue etc/config.txt'],
    ['cp -a a tree in', `cp -a ${outside}/tree copied && test -L copied/link`],
    ['rm -rf a lower tree', 'rm -rf usr/share/tree && test ! -e usr/share/tree'],
    ['tar -x over lower files', `tar -xf ${outside}/over.tar && grep -q "new x1" data/x1`],
    ['git init, add, commit', 'cd proj && git init -q && git add -A && git -c user.name=t -c user.email=t@example.com commit -q -m first && git log --oneline | grep -q first && git status --porcelain | wc -l | grep -qx 0'],
    ['mv a lower directory', 'mv opt/app opt/app2 && test -x opt/app2/bin/run && test ! -e opt/app && test -L opt/app2/current'],
    ['chmod -R', 'chmod -R go-rwx perm && test "$(stat -c %a perm/a/b/c)" = 600'],
    ['cc compiles and the binary runs', 'cd proj && printf %s "$C_PROGRAM" > hello.c && cc -o hello hello.c && ./hello | grep -q "hello from C" && grep -q "written by C" out.txt']
  ]
}

function sh (script: string, cwd: string, extra: SpawnSyncOptions = {}): { code: number; out: string } {
  const res = spawnSync('sh', ['-c', script], {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      C_PROGRAM,
      GIT_AUTHOR_DATE: '2024-01-01T00:00:00Z',
      GIT_COMMITTER_DATE: '2024-01-01T00:00:00Z',
      GIT_CONFIG_NOSYSTEM: '1',
      HOME: cwd
    },
    timeout: 60_000,
    ...extra
  })
  return { code: res.status ?? 128, out: `${String(res.stdout)}${String(res.stderr)}`.trim() }
}

/** Git's index records stat data (inode, device, ctime) that differ between any two filesystems. */
/** An ACL as setfattr takes it: version 2, then tag, permissions and id per entry, little-endian. */
function acl (entries: Array<[tag: number, perm: number, id: number]>): string {
  return '0x02000000' + entries.map(([tag, perm, id]) => {
    const b = Buffer.alloc(8)
    b.writeUInt16LE(tag, 0)
    b.writeUInt16LE(perm, 2)
    b.writeUInt32LE(id, 4)
    return b.toString('hex')
  }).join('')
}
/** The id of ACL entries that name no one (owner, owning group, mask, other). */
const ANY = 0xffffffff

function comparable (tree: Tree): Tree {
  const out = new Map(tree)
  const index = out.get('/proj/.git/index')
  if (index !== undefined) out.set('/proj/.git/index', { ...index, sha256: undefined, size: undefined })
  return out
}

t.test('Unix tools on a container mounted by the daemon', async (t) => {
  const scratch = mkdtempSync(join(tmpdir(), 'stools-'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  const base = join(scratch, 'base')
  const top = join(scratch, 'top')
  buildLayer(base, BASE)
  buildLayer(top, TOP)

  // Inputs the tools read from outside the mounts.
  const outside = join(scratch, 'outside')
  buildLayer(join(outside, 'tree'), [
    { type: 'file', path: 'f', content: 'copied in', mode: 0o640, uid: 1000, gid: 1000 },
    { type: 'dir', path: 'sub', mode: 0o700 },
    { type: 'file', path: 'sub/g', content: Buffer.alloc(100_000, 'g'), xattrs: { 'user.k': 'v' } },
    { type: 'symlink', path: 'link', target: 'sub/g' }
  ])
  buildLayer(join(outside, 'src'), [
    { type: 'file', path: 'data/x1', content: 'new x1\n' },
    { type: 'file', path: 'data/x3', content: 'new x3\n' }
  ])
  t.equal(spawnSync('tar', ['-cf', join(outside, 'over.tar'), '-C', join(outside, 'src'), 'data']).status, 0, 'tar input made')

  const d = await startDaemon(t)
  // The nobody checks below must reach the mount through these directories.
  chmodSync(d.base, 0o755)
  const imported = await d.cli(['image', 'create', 'tools:1', base, top])
  t.equal(imported.code, 0, `image create: ${imported.stderr}`)
  const mnt = d.dir('mnt')
  const mounted = await d.cli(['mount', 'tools:1', mnt, '--name', 'c1'])
  t.equal(mounted.code, 0, `mount: ${mounted.stderr}`)
  if (mounted.code !== 0) return

  const kupper = join(scratch, 'k-upper')
  const kwork = join(scratch, 'k-work')
  mkdirSync(kupper)
  mkdirSync(kwork)
  const kmnt = mountKernelOverlay(t, { lowerDirs: [top, base], upperDir: kupper, workDir: kwork })

  await t.test('st_ino of a lower file survives its copy-up', async (t) => {
    const before = lstatSync(join(mnt, 'var/ino-test'), { bigint: true }).ino
    t.equal(sh('echo x >> var/ino-test', mnt).code, 0)
    t.equal(lstatSync(join(mnt, 'var/ino-test'), { bigint: true }).ino, before, 'same st_ino after echo x >> f')
  })

  await t.test('a file capability set after writes is seen, and the next write clears it, as on kernel overlayfs', async (t) => {
    // CAP_NET_RAW, permitted and effective (struct vfs_cap_data, revision 2, little-endian).
    const cap = '0x0100000200200000000000000000000000000000'
    const script = [
      'printf a > var/cap-file', 'printf b >> var/cap-file',
      `setfattr -n security.capability -v ${cap} var/cap-file`,
      'getfattr -e hex -n security.capability --only-values var/cap-file | od -An -tx1 | tr -d " \\n"; echo',
      'printf c >> var/cap-file',
      'getfattr -n security.capability var/cap-file >/dev/null 2>&1 && echo kept || echo cleared',
      'cat var/cap-file; echo'
    ].join('\n')
    const ours = sh(script, mnt)
    const kernel = sh(script, kmnt)
    t.equal(ours.code, 0, ours.out)
    t.equal(ours.out, kernel.out, 'the same as kernel overlayfs')
    t.match(ours.out, /^0100000200200000000000000000000000000000\ncleared\nabc$/, 'the write after setcap cleared it')
  })

  await t.test('renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE as on kernel overlayfs', async (t) => {
    const outcome = (fn: () => void): string => {
      try {
        fn()
        return 'ok'
      } catch (err) {
        return errorCode(err) ?? String(err)
      }
    }
    for (const root of [mnt, kmnt]) {
      t.equal(sh('printf 1 > var/nr-a; printf 2 > var/nr-b; printf 3 > var/nr-c', root).code, 0)
    }
    const run = (root: string): string[] => [
      outcome(() => renameat2(join(root, 'var/nr-a'), join(root, 'var/nr-b'), RENAME_NOREPLACE)),
      outcome(() => renameat2(join(root, 'var/nr-a'), join(root, 'var/nr-new'), RENAME_NOREPLACE)),
      outcome(() => renameat2(join(root, 'var/ino-test'), join(root, 'var/nr-c'), RENAME_NOREPLACE)),
      outcome(() => renameat2(join(root, 'var/nr-b'), join(root, 'var/nr-c'), RENAME_EXCHANGE)),
      sh('cat var/nr-new var/nr-b var/nr-c; ls var | grep -c nr-', root).out
    ]
    const ours = run(mnt)
    t.same(ours, run(kmnt), 'the same outcomes and files as kernel overlayfs')
    t.same(ours, ['EEXIST', 'ok', 'EEXIST', 'ok', '1323'], 'nr-b and nr-c traded contents')
  })

  await t.test('the link count of a file unlinked while open, as on kernel overlayfs', async (t) => {
    const counts = (root: string): number[] => {
      const at = (name: string): string => join(root, 'var', name)
      writeFileSync(at('nl-one'), '1')
      writeFileSync(at('nl-two'), '2')
      linkSync(at('nl-two'), at('nl-two-b'))
      const one = openSync(at('nl-one'), 'r')
      const two = openSync(at('nl-two'), 'r')
      unlinkSync(at('nl-one'))
      unlinkSync(at('nl-two'))
      const seen = [fstatSync(one).nlink, fstatSync(two).nlink, lstatSync(at('nl-two-b')).nlink]
      closeSync(one)
      closeSync(two)
      return seen
    }
    const ours = counts(mnt)
    t.same(ours, counts(kmnt), 'the same as kernel overlayfs')
    t.same(ours, [0, 1, 1])
  })

  await t.test('an open file whose name and directory are gone still changes and reopens, as on kernel overlayfs', async (t) => {
    const run = (root: string): string => {
      mkdirSync(join(root, 'var/gone-dir'))
      writeFileSync(join(root, 'var/gone-dir/f'), 'abc')
      const fd = openSync(join(root, 'var/gone-dir/f'), 'r+')
      try {
        unlinkSync(join(root, 'var/gone-dir/f'))
        rmdirSync(join(root, 'var/gone-dir'))
        fchmodSync(fd, 0o600)
        const again = openSync(`/proc/self/fd/${fd}`, 'a')
        writeSync(again, 'Z')
        closeSync(again)
        const back = Buffer.alloc(8)
        const n = readSync(fd, back, 0, 8, 0)
        const st = fstatSync(fd)
        return `${back.subarray(0, n).toString()} ${(st.mode & 0o7777).toString(8)} ${st.nlink}`
      } finally {
        closeSync(fd)
      }
    }
    const ours = run(mnt)
    t.equal(ours, run(kmnt), 'the same as kernel overlayfs')
    t.equal(ours, 'abcZ 600 0')
  })

  await t.test('a file unlinked while open keeps working through its descriptor', async (t) => {
    for (const name of ['var/open-unlink', 'shared/upper-file']) {
      const p = join(mnt, name)
      if (name.startsWith('shared')) writeFileSync(p, 'upper content\n')
      const fd = openSync(p, 'r+')
      try {
        unlinkSync(p)
        t.equal(lstatSync(p, { throwIfNoEntry: false }), undefined, `${name} is gone from the tree`)
        const data = Buffer.from('written after unlink\n')
        t.equal(writeSync(fd, data, 0, data.length, 0), data.length, `${name}: write through the fd`)
        const back = Buffer.alloc(data.length)
        t.equal(readSync(fd, back, 0, back.length, 0), data.length, `${name}: read through the fd`)
        t.same(back, data)
        t.equal(fstatSync(fd).size, data.length, `${name}: fstat through the fd`)
      } catch (err) {
        t.fail(`${name}: ${String(err)}`)
      } finally {
        closeSync(fd)
      }
    }
  })

  await t.test('tools agree with kernel overlayfs', async (t) => {
    for (const [what, script] of toolSteps(outside)) {
      const k = sh(script, kmnt)
      const s = sh(script, mnt)
      t.equal(k.code, 0, `kernel: ${what}${k.out === '' ? '' : `: ${k.out}`}`)
      t.equal(s.code, 0, `stratafs: ${what}${s.out === '' ? '' : `: ${s.out}`}`)
    }
    // The first two subtests ran on stratafs only: do the same on the kernel side.
    sh('echo x >> var/ino-test && rm var/open-unlink', kmnt)
    const diff = diffTrees(comparable(snapshot(kmnt)), comparable(snapshot(mnt)), {
      names: ['kernel', 'stratafs'], mtime: false, ignoreGhosts: 'a'
    })
    t.same(diff, [], 'the trees agree (mtimes aside)')
  })

  await t.test('permissions for a process that is not root', async (t) => {
    const as = (script: string): { code: number; out: string } => {
      const res = spawnSync('setpriv', [...NOBODY, 'sh', '-c', script], { cwd: mnt, encoding: 'utf8', timeout: 30_000 })
      return { code: res.status ?? 128, out: `${res.stdout}${res.stderr}`.trim() }
    }
    t.not(as('cat root/secret').code, 0, 'nobody cannot read a 0600 root file')
    t.not(as('echo x > locked/f').code, 0, 'nobody cannot create in a 0755 root dir')
    t.equal(lstatSync(join(mnt, 'locked/f'), { throwIfNoEntry: false }), undefined, 'and nothing was created')
    t.not(as('echo x >> etc/motd').code, 0, 'nobody cannot write a 0644 root file')
    const made = as('echo mine > shared/nobody-file && cat shared/nobody-file')
    t.same(made, { code: 0, out: 'mine' }, 'nobody can create in a 1777 dir')
    const st = lstatSync(join(mnt, 'shared/nobody-file'), { throwIfNoEntry: false })
    t.same(st === undefined ? undefined : [st.uid, st.gid], [65534, 65534], 'owned by nobody')
    writeFileSync(join(mnt, 'shared/root-file'), 'root\n', { mode: 0o666 })
    t.not(as('rm -f shared/root-file').code, 0, 'the sticky bit keeps nobody from removing root\'s file')
    t.ok(lstatSync(join(mnt, 'shared/root-file'), { throwIfNoEntry: false }), 'root\'s file is still there')

    // A write by someone without CAP_FSETID drops setuid and setgid: the kernel does it, as on
    // kernel overlayfs, so the session must not take that job over (handle_killpriv).
    const modes: number[] = []
    for (const root of [mnt, kmnt]) {
      const file = join(root, 'shared/suid-file')
      writeFileSync(file, 'x')
      chmodSync(file, 0o6777)
      const res = spawnSync('setpriv', [...NOBODY, 'sh', '-c', 'printf y >> shared/suid-file'], { cwd: root, encoding: 'utf8' })
      t.equal(res.status, 0, res.stderr)
      modes.push(lstatSync(file).mode & 0o7777)
    }
    t.same(modes, [0o777, 0o777], 'setuid and setgid dropped on both')

    // POSIX ACLs decide, as under kernel overlayfs: one lets nobody read a 0600 file, one keeps
    // nobody out of a file everyone else may read.
    const letIn = acl([[1, 6, ANY], [2, 4, 65534], [4, 0, ANY], [0x10, 4, ANY], [0x20, 0, ANY]])
    const keepOut = acl([[1, 6, ANY], [2, 0, 65534], [4, 4, ANY], [0x10, 4, ANY], [0x20, 4, ANY]])
    const seen: string[] = []
    for (const root of [mnt, kmnt]) {
      const set = sh([
        'printf in > shared/acl-in', 'chmod 600 shared/acl-in', `setfattr -n system.posix_acl_access -v ${letIn} shared/acl-in`,
        'printf out > shared/acl-out', 'chmod 644 shared/acl-out', `setfattr -n system.posix_acl_access -v ${keepOut} shared/acl-out`,
        'stat -c %a shared/acl-in shared/acl-out'
      ].join('\n'), root)
      t.equal(set.code, 0, set.out)
      const read = (name: string): string => spawnSync('setpriv', [...NOBODY, 'cat', `shared/${name}`], { cwd: root, encoding: 'utf8' }).status === 0 ? 'read' : 'denied'
      seen.push(`${set.out.replace(/\n/g, ' ')}: ${read('acl-in')}, ${read('acl-out')}`)
    }
    t.equal(seen[0], seen[1], 'the same as kernel overlayfs')
    t.equal(seen[0], '640 644: read, denied')
  })

  await t.test('a default ACL is passed on and the umask set aside, also over a whiteout, as on kernel overlayfs', async (t) => {
    const inherit = acl([[1, 7, ANY], [4, 5, ANY], [0x20, 0, ANY]])
    const script = [
      'umask 022', `setfattr -n system.posix_acl_default -v ${inherit} acl`,
      'rm acl/again', 'touch acl/again acl/fresh', 'mkdir acl/dir', 'mkfifo acl/fifo', 'touch var/umasked',
      'stat -c %a acl/again acl/fresh acl/dir acl/fifo var/umasked',
      'getfattr -e hex -n system.posix_acl_default --only-values acl/dir | od -An -tx1 | tr -d " \\n"'
    ].join('\n')
    const ours = sh(script, mnt)
    t.equal(ours.code, 0, ours.out)
    t.equal(ours.out, sh(script, kmnt).out, 'the same as kernel overlayfs')
    t.match(ours.out, /^640\n640\n750\n640\n644\n02000000/, 'modes from the ACL, the umask only outside it')
  })

  await t.test('a directory made where one was removed, in its inode number, is given its parent\'s default ACL', async (t) => {
    const inherit = acl([[1, 7, ANY], [4, 5, ANY], [0x20, 0, ANY]])
    // A file made in each d<i> makes the server look for a default ACL there, and find none.
    const script = [
      'umask 077', 'mkdir reacl', 'for i in $(seq 20); do mkdir reacl/d$i; touch reacl/d$i/f; done',
      'removed=$(stat -c %i reacl/d*)', 'rm -r reacl/d*',
      `setfattr -n system.posix_acl_default -v ${inherit} reacl`,
      'for i in $(seq 20); do mkdir reacl/e$i; touch reacl/e$i/f; done',
      'stat -c %a reacl/e*/f | sort | uniq -c', 'echo reused $(stat -c %i reacl/e* | grep -cxF "$removed")'
    ].join('\n')
    const modes = (out: string): string => out.replace(/\nreused \d+$/, '')
    const ours = sh(script, mnt)
    t.equal(ours.code, 0, ours.out)
    t.match(ours.out, /\nreused [1-9]/, 'new directories took removed ones\' inode numbers')
    t.equal(modes(ours.out), modes(sh(script, kmnt).out), 'the same modes as on kernel overlayfs')
    t.match(ours.out, /^20 640\n/, 'modes from the ACL, not the umask')
  })

  await t.test('a name starting with .fuse_hidden is an ordinary name, as on kernel overlayfs', async (t) => {
    const script = [
      'printf mine > var/.fuse_hidden_mine', 'printf moved > var/fh-src', 'mv var/fh-src var/.fuse_hidden0000000100000001',
      'ls -a var | grep fuse_hidden', 'cat var/.fuse_hidden_mine var/.fuse_hidden0000000100000001'
    ].join('\n')
    const ours = sh(script, mnt)
    t.equal(ours.code, 0, ours.out)
    t.equal(ours.out, sh(script, kmnt).out, 'the same as kernel overlayfs')
    t.match(ours.out, /^\.fuse_hidden0000000100000001\n\.fuse_hidden_mine\nminemoved$/)
  })

  await t.test('diff and commit', async (t) => {
    const diff = await d.cli(['diff', 'c1'])
    t.equal(diff.code, 0, `diff: ${diff.stderr}`)
    const lines = new Set(diff.stdout.split('\n').filter(Boolean))
    for (const want of ['C /etc', 'C /etc/config.txt', 'D /usr/share/tree', 'A /copied', 'A /copied/sub/g', 'C /data/x1', 'A /data/x3',
      'A /proj/.git', 'A /opt/app2', 'D /opt/app', 'D /var/open-unlink', 'C /var/ino-test', 'A /shared/nobody-file']) {
      t.ok(lines.has(want), `diff shows ${want}`)
    }
    t.notOk([...lines].some((l) => !/^[ACD] \//.test(l)), 'every line is A/C/D and a path')
    t.notOk(lines.has('C /usr/share/tree/a/one') || lines.has('D /usr/share/tree/a'), 'nothing under a deleted dir')

    const committed = await d.cli(['commit', 'c1', 'tools:committed'])
    t.equal(committed.code, 0, `commit: ${committed.stderr}`)
    const ro = d.dir('ro')
    const roMounted = await d.cli(['mount', 'tools:committed', ro, '--read-only'])
    t.equal(roMounted.code, 0, `mount the committed image: ${roMounted.stderr}`)
    if (roMounted.code !== 0) return
    t.same(diffTrees(snapshot(mnt), snapshot(ro), { names: ['container', 'committed image'] }), [], 'the committed image shows what the container showed')
    t.not(sh('touch newfile', ro).code, 0, 'a read-only mount refuses writes')
    const un = await d.cli(['umount', ro])
    t.equal(un.code, 0, `umount: ${un.stderr}`)
  })

  await t.test('chroot into a busybox image', async (t) => {
    const bb = join(scratch, 'busybox')
    mkdirSync(join(bb, 'bin'), { recursive: true })
    copyFileSync('/bin/busybox', join(bb, 'bin/busybox'))
    chmodSync(join(bb, 'bin/busybox'), 0o755)
    for (const applet of ['sh', 'echo', 'cat', 'ls', 'mkdir', 'rm', 'wc', 'test']) symlinkSync('busybox', join(bb, 'bin', applet))
    const made = await d.cli(['image', 'create', 'busybox:1', bb])
    t.equal(made.code, 0, `image create: ${made.stderr}`)
    const bmnt = d.dir('bb')
    const mounted = await d.cli(['mount', 'busybox:1', bmnt, '--name', 'bb'])
    t.equal(mounted.code, 0, `mount: ${mounted.stderr}`)
    if (mounted.code !== 0) return
    writeFileSync(join(bmnt, 'script.sh'), [
      'mkdir -p /srv/sub',
      'echo one > /srv/a',
      'echo two >> /srv/a',
      'cat /srv/a > /srv/sub/b',
      'rm /srv/a',
      'ls /srv /srv/sub',
      'wc -l < /srv/sub/b',
      'cat /bin/../srv/sub/b'
    ].join('\n') + '\n')
    // PATH is the one inside the image; chroot itself is found outside, before it runs.
    const res = spawnSync('/usr/sbin/chroot', [bmnt, '/bin/sh', '/script.sh'], { encoding: 'utf8', timeout: 30_000, env: { PATH: '/bin' } })
    t.equal(res.status, 0, `chroot ran: ${res.stderr}${res.error === undefined ? '' : String(res.error)}`)
    t.same(String(res.stdout).split('\n').map((l) => l.trim()).filter(Boolean), ['/srv:', 'sub', '/srv/sub:', 'b', '2', 'one', 'two'], 'the script wrote and read its files')
    const un = await d.cli(['umount', bmnt])
    t.equal(un.code, 0, `umount: ${un.stderr}`)
  })

  const un = await d.cli(['umount', mnt])
  t.equal(un.code, 0, `umount: ${un.stderr}`)
})
