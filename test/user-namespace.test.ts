import { spawn, spawnSync } from 'node:child_process'
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { lsetxattr, mknod } from '../src/sys/index.js'
import { repoDir } from './lib/daemon.js'
import { isMounted, unmountFuse } from './lib/overlay-mount.js'
import { diffTrees, snapshot, type Tree } from './lib/tree.js'
import type { Tap } from './lib/tap.js'

/**
 * The overlay's own xattrs under `user.overlay.*`, as kernel overlayfs keeps them with
 * `userxattr`: what a rootless container engine needs, whose user namespace cannot write
 * `trusted.*`. The same shell steps run on stratafs-overlay and on kernel overlayfs mounted with
 * `userxattr`, once in a user namespace like a rootless podman's (ids 0-65535 mapped, no
 * privilege over the host) where stratafs picks `user.overlay.*` by itself, once as root with
 * `-o userxattr`. The merged views and the uppers must match.
 */

const bin = join(repoDir, 'bin', 'stratafs-overlay')

/** Run in each mount's root: a copy-up, a setuid bit kept, a chown inside the namespace, an opaque
 * directory, whiteouts of both layers' names, a rename, links, user xattrs (one escaped). */
const STEPS = `
echo more >> a
chmod 4755 tool
chown 1000:1000 owned
rm -rf d && mkdir d && echo n > d/new
rm e/g
mv f h
ln -s a link2
ln a hard
setfattr -n user.note -v hi a
setfattr -n user.overlay.mine -v x a
mkdir -p new/deep && touch new/deep/x
rm -rf top
`

/** What a mount shows: names, types, modes, owners, sizes, link targets, xattrs and data. */
const VIEW = `find . -printf '%p %y %m %U %G %s %l %n\\n' | LC_ALL=C sort; find . | LC_ALL=C sort | xargs getfattr -h -d -m - --absolute-names | grep -v '^$'; cat a d/new`

interface Run { ours: string, kernel: string, told: string }

/**
 * Two layers with whiteouts and an opaque directory in the kernel's form, the opaque marker a
 * `user.overlay.opaque` xattr, which only an index that reads user xattrs sees (kernel overlayfs
 * takes no `.wh.` files: those are tested with podman's own layers).
 */
function layers (base: string): { bottom: string, top: string } {
  const bottom = join(base, 'bottom')
  const top = join(base, 'top')
  for (const d of [bottom, join(bottom, 'd'), join(bottom, 'e'), join(bottom, 'gone'), top, join(top, 'top'), join(top, 'e')]) mkdirSync(d)
  writeFileSync(join(bottom, 'a'), 'a\n')
  writeFileSync(join(bottom, 'tool'), '#!/bin/sh\n', { mode: 0o755 })
  writeFileSync(join(bottom, 'owned'), 'o')
  writeFileSync(join(bottom, 'f'), 'f')
  writeFileSync(join(bottom, 'd', 'old'), 'old')
  writeFileSync(join(bottom, 'e', 'g'), 'g')
  writeFileSync(join(bottom, 'e', 'covered'), 'bottom')
  writeFileSync(join(bottom, 'gone', 'x'), 'x')
  symlinkSync('a', join(bottom, 'link'))
  lsetxattr(join(bottom, 'a'), 'user.origin', Buffer.from('bottom'))
  mknod(join(top, 'gone'), 0o20000, 0)
  lsetxattr(join(top, 'e'), 'user.overlay.opaque', Buffer.from('y'))
  writeFileSync(join(top, 'e', 'g'), 'top g')
  writeFileSync(join(top, 'top', 'y'), 'y')
  chownSync(join(top, 'top', 'y'), 2000, 2000)
  return { bottom, top }
}

/**
 * Mounts both implementations on copies of the same stack, runs STEPS and VIEW on each and
 * unmounts them, all in one shell: in a user namespace, the only place its mounts are seen.
 */
async function run (base: string, userns: boolean): Promise<Run> {
  const { bottom, top } = layers(base)
  const lowerdir = `${top}:${bottom}`
  const dirs = Object.fromEntries(['u', 'w', 'm', 'ku', 'kw', 'km'].map(n => [n, join(base, n)]))
  for (const d of Object.values(dirs)) mkdirSync(d)
  const option = userns ? '' : ',userxattr'
  const script = `
set -e
trap 'fusermount -u ${dirs.m} 2>/dev/null || umount -l ${dirs.m} 2>/dev/null; umount ${dirs.km} 2>/dev/null || true' EXIT
env -u NODE_OPTIONS ${bin} -o lowerdir=${lowerdir},upperdir=${dirs.u},workdir=${dirs.w}${option} ${dirs.m} 2> ${base}/told
mount -t overlay overlay -o userxattr,lowerdir=${lowerdir},upperdir=${dirs.ku},workdir=${dirs.kw} ${dirs.km}
for m in ${dirs.m} ${dirs.km}; do
  cd $m
  ${STEPS}
done
cd /
(cd ${dirs.m} && ${VIEW}) > ${base}/ours
(cd ${dirs.km} && ${VIEW}) > ${base}/kernel
`
  const env = { ...process.env, STRATAFS_NODE: process.execPath }
  const child = userns
    // Held until its uid and gid maps are written, as newuidmap writes a rootless engine's.
    ? spawn('unshare', ['--user', '--mount', 'sh', '-c', `read go; ${script}`], { env, stdio: ['pipe', 'inherit', 'pipe'] })
    : spawn('sh', ['-c', script], { env, stdio: ['ignore', 'inherit', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString() })
  if (userns) {
    await new Promise(resolve => setTimeout(resolve, 200))
    writeFileSync(`/proc/${child.pid}/uid_map`, '0 0 65536')
    writeFileSync(`/proc/${child.pid}/gid_map`, '0 0 65536')
    child.stdin!.end('go\n')
  }
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  if (code !== 0) throw new Error(`the steps failed (exit ${code}): ${stderr.trim()}`)
  const read = (name: string): string => readFileSync(join(base, name), 'utf8')
  return { ours: read('ours'), kernel: read('kernel'), told: read('told') }
}

/**
 * The kernel also records origins, an impure flag and a uuid, which stratafs does not use, and
 * makes its whiteouts links of one inode.
 */
function withoutKernelBookkeeping (tree: Tree): Tree {
  for (const node of tree.values()) {
    if (node.type === 'char' && node.rdev === '0:0') {
      delete node.nlink
      delete node.linkGroup
    }
    for (const name of Object.keys(node.xattrs)) {
      if (/^user\.overlay\.(origin|impure|uuid)$/.test(name)) delete node.xattrs[name]
    }
  }
  return tree
}

function fixture (t: Tap): string {
  const base = mkdtempSync(join(tmpdir(), 'userns-'))
  t.teardown(() => {
    // The servers of a namespace that failed half-way: none may outlive the test.
    spawnSync('pkill', ['-f', `overlay-main.js -f .*${base}`])
    unmountFuse(join(base, 'm'))
    if (!isMounted(join(base, 'm'))) rmSync(base, { recursive: true, force: true })
  })
  return base
}

for (const userns of [true, false]) {
  t.test(userns ? 'in a user namespace, as rootless podman runs its mount program' : 'as root, with -o userxattr', async t => {
    const base = fixture(t)
    const r = await run(base, userns)
    t.equal(r.ours, r.kernel, 'the merged views match kernel overlayfs with userxattr')
    t.match(r.ours, /^\.\/d\/new f 644 0 0 2 {2}1$/m, 'a directory made over a removed one shows only its new name')
    t.match(r.ours, /^# file: \.\/a\nuser\.note="hi"\nuser\.origin="bottom"\nuser\.overlay\.mine="x"$/m, 'xattrs kept, the overlay-named one as the user set it')
    if (userns) t.match(r.told, /in a user namespace: the overlay's xattrs are user\.overlay\.\*/, 'the caller is told which xattrs')
    else t.equal(r.told, '', 'nothing to tell when asked for')
    const ours = withoutKernelBookkeeping(snapshot(join(base, 'u')))
    const kernel = withoutKernelBookkeeping(snapshot(join(base, 'ku')))
    t.same(diffTrees(ours, kernel, { names: ['stratafs', 'kernel'], mtime: false, root: false }), [], 'the uppers match, whiteouts and opaque markers included')
    t.same(ours.get('/d')?.xattrs, { 'user.overlay.opaque': '79' }, 'the opaque marker is a user xattr')
    t.same(ours.get('/a')?.xattrs['user.overlay.overlay.mine'], '78', 'a user\'s overlay-named xattr is stored escaped')
    const trusted = spawnSync('getfattr', ['-R', '-m', '^trusted\\.', '--absolute-names', join(base, 'u')], { encoding: 'utf8' })
    t.equal(trusted.stdout, '', 'no trusted.* xattr in the upper')
    t.notOk(isMounted(join(base, 'm')), 'nothing left mounted here')
  })
}
