import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { isMounted, mountStratafs, unmountFuse } from './lib/overlay-mount.js'
import { diffTrees, snapshot, type Tree } from './lib/tree.js'
import type { Tap } from './lib/tap.js'

/**
 * `uidmapping=` and `gidmapping=`, as podman passes them to a mount program for a container with
 * a user namespace of its own: stored ids show shifted, ids that come in (a chown, a new file's
 * owner) are stored shifted back, and ids outside the ranges are the overflow id both ways. And
 * the `squash_to_*` options, which show every name as owned by one id. fuse-overlayfs, whose
 * options these are, is the oracle: the same steps on both, the merged views and the uppers
 * compared.
 */

/** As podman writes them (a leading `:`); the gids in two ranges. */
const MAPPING = ['uidmapping=:0:100000:65536', 'gidmapping=:0:100000:1000:1000:200000:1000']

function fuseOverlayfs (t: Tap, lower: string, upper: string, work: string, mnt: string, options = MAPPING): void {
  const r = spawnSync('fuse-overlayfs', ['-o', [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`, ...options].join(','), mnt], { encoding: 'utf8' })
  t.teardown(() => unmountFuse(mnt))
  if (r.status !== 0) throw new Error(`fuse-overlayfs: ${r.stderr}`)
}

/** What steps leave behind only because fuse-overlayfs keeps its own markers in the upper. */
function withoutFuseOverlayfsMarkers (tree: Tree): Tree {
  for (const [path, node] of tree) {
    if (/\/\.wh\.(\.wh\.)?\.?opq$/.test(path)) tree.delete(path)
    for (const name of Object.keys(node.xattrs)) if (name.startsWith('user.fuseoverlayfs.')) delete node.xattrs[name]
  }
  return tree
}

/** A lower, and an upper, work dir and mountpoint for each implementation; removed at the end. */
function fixture (t: Tap): Record<string, string> {
  const base = mkdtempSync(join(tmpdir(), 'idmap-'))
  // The container's user must reach the mounts.
  chmodSync(base, 0o755)
  const dirs = Object.fromEntries(['l', 'u1', 'w1', 'u2', 'w2', 'm1', 'm2'].map(n => [n, join(base, n)]))
  for (const d of Object.values(dirs)) mkdirSync(d)
  t.teardown(() => {
    if (!isMounted(dirs.m1!) && !isMounted(dirs.m2!)) rmSync(base, { recursive: true, force: true })
  })
  return dirs
}

/** Runs a command, as root or as the uid (and gid) `as`. */
const run = (cmd: string[], as?: string): void => {
  const r = spawnSync(as === undefined ? cmd[0]! : 'setpriv', as === undefined ? cmd.slice(1) : [`--reuid=${as}`, `--regid=${as}`, '--clear-groups', ...cmd], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`)
}

const idsOf = (path: string): string => spawnSync('stat', ['-c', '%u:%g', path], { encoding: 'utf8' }).stdout.trim()

t.test('ids shift as with fuse-overlayfs', async t => {
  const dirs = fixture(t)
  const { l } = dirs
  writeFileSync(join(l!, 'root'), 'r')
  writeFileSync(join(l!, 'mapped'), 'm')
  chownSync(join(l!, 'mapped'), 5, 1005)
  writeFileSync(join(l!, 'outside'), 'o')
  chownSync(join(l!, 'outside'), 70000, 3000)
  mkdirSync(join(l!, 'open'))
  chmodSync(join(l!, 'open'), 0o1777)
  mountStratafs(t, { lowerDirs: [l!], upperDir: dirs.u1, workDir: dirs.w1, mountpoint: dirs.m1, options: MAPPING })
  fuseOverlayfs(t, l!, dirs.u2!, dirs.w2!, dirs.m2!)
  const shown = (m: string, name: string): string => idsOf(join(m, name))
  t.equal(shown(dirs.m1!, 'root'), '100000:100000', 'a stored 0 shows as the first id of the range')
  t.equal(shown(dirs.m1!, 'mapped'), '100005:200005', 'each id by its own range')
  t.equal(shown(dirs.m1!, 'outside'), '65534:65534', 'an id outside every range shows as the overflow id')
  for (const m of [dirs.m1!, dirs.m2!]) {
    run(['chown', '100007:200008', join(m, 'mapped')])
    run(['chown', '100001:100001', join(m, 'root')])
    run(['touch', join(m, 'by-host-root')])
    run(['touch', join(m, 'open', 'by-container-user')], '100001')
    run(['mkdir', join(m, 'open', 'dir-of-container-user')], '100001')
  }
  const views = [snapshot(dirs.m1!), snapshot(dirs.m2!)]
  t.same(diffTrees(views[0]!, views[1]!, { names: ['stratafs', 'fuse-overlayfs'], mtime: false, nlink: false }), [], 'the merged views match')
  t.equal(shown(dirs.m1!, 'open/by-container-user'), '100001:100001', 'a new file is its creator\'s')
  unmountFuse(dirs.m1!)
  unmountFuse(dirs.m2!)
  const uppers = [snapshot(dirs.u1!), withoutFuseOverlayfsMarkers(snapshot(dirs.u2!))]
  t.same(diffTrees(uppers[0]!, uppers[1]!, { names: ['stratafs', 'fuse-overlayfs'], mtime: false, root: false }), [], 'the uppers match')
  const stored = (name: string): string => idsOf(join(dirs.u1!, name))
  t.equal(stored('mapped'), '7:1008', 'a chown is stored shifted back')
  t.equal(stored('open/by-container-user'), '1:1', 'so is a new file\'s owner')
  t.equal(stored('by-host-root'), '65534:65534', 'an owner outside every range is stored as the overflow id')
})

t.test('squash_to_root and squash_to_gid show every name as theirs, and store what comes in as it comes', async t => {
  const dirs = fixture(t)
  const squash = ['squash_to_root', 'squash_to_gid=7']
  writeFileSync(join(dirs.l!, 'owned'), 'o')
  chownSync(join(dirs.l!, 'owned'), 1000, 1000)
  mkdirSync(join(dirs.l!, 'open'))
  chmodSync(join(dirs.l!, 'open'), 0o1777)
  mountStratafs(t, { lowerDirs: [dirs.l!], upperDir: dirs.u1, workDir: dirs.w1, mountpoint: dirs.m1, options: squash })
  fuseOverlayfs(t, dirs.l!, dirs.u2!, dirs.w2!, dirs.m2!, squash)
  t.equal(idsOf(join(dirs.m1!, 'owned')), '0:7', 'a stored 1000:1000 shows as 0:7')
  for (const m of [dirs.m1!, dirs.m2!]) {
    run(['chown', '5:6', join(m, 'owned')])
    run(['sh', '-c', `: > ${join(m, 'open', 'by-user')}`], '1234')
  }
  t.same(diffTrees(snapshot(dirs.m1!), snapshot(dirs.m2!), { names: ['stratafs', 'fuse-overlayfs'], mtime: false, nlink: false }), [], 'the merged views match')
  unmountFuse(dirs.m1!)
  unmountFuse(dirs.m2!)
  t.same(diffTrees(snapshot(dirs.u1!), withoutFuseOverlayfsMarkers(snapshot(dirs.u2!)), { names: ['stratafs', 'fuse-overlayfs'], mtime: false, root: false }), [], 'the uppers match')
  t.equal(idsOf(join(dirs.u1!, 'owned')), '5:6', 'a chown is stored as given')
  t.equal(idsOf(join(dirs.u1!, 'open', 'by-user')), '1234:1234', 'so is a new file\'s owner')
})

t.test('a bad mapping is a usage error', async t => {
  const base = t.testdir({ l: {}, m: {} })
  for (const bad of ['uidmapping=0:100000', 'uidmapping=', 'uidmapping=a:b:c', 'gidmapping=0:100000:0', 'uidmapping=4294967295:0:2', 'squash_to_uid=-1', 'squash_to_gid=x']) {
    const r = spawnSync('env', ['-u', 'NODE_OPTIONS', join(import.meta.dirname ?? '', '..', 'bin', 'stratafs-overlay'), '-o', `lowerdir=${join(base, 'l')},${bad}`, join(base, 'm')], { encoding: 'utf8' })
    t.equal(r.status, 2, `${bad}: exit 2`)
    t.match(r.stderr, /^stratafs-overlay: ((uid|gid)mapping|squash_to_(uid|gid))=/, 'one line naming the option')
    t.notOk(isMounted(join(base, 'm')), 'nothing mounted')
  }
})
