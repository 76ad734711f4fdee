import { spawnSync } from 'node:child_process'
import { closeSync, openSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { errorCode } from '../src/errors.js'
import { lgetxattr, llistxattr, lremovexattr, lsetxattr } from '../src/sys/index.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs } from './lib/overlay-mount.js'
import { stackDirs, type StackDirs } from './lib/stack-dirs.js'

/**
 * xattr names beside kernel overlayfs: a user's `trusted.overlay.*` xattrs are stored escaped (so
 * an overlay can keep its layers inside a container), the overlay's own stay hidden, and only a
 * privileged process lists `trusted.*` names.
 */

function stack (t: Test): StackDirs {
  const d = stackDirs(t, 'xnames')
  writeFileSync(join(d.lower, 'f'), 'f')
  // A nested overlay's marker as it sits in a layer: escaped.
  lsetxattr(join(d.lower, 'f'), 'trusted.overlay.overlay.opaque', Buffer.from('y'))
  lsetxattr(join(d.lower, 'f'), 'trusted.overlay.redirect', Buffer.from('/elsewhere'))
  lsetxattr(join(d.lower, 'f'), 'trusted.k', Buffer.from('t'))
  lsetxattr(join(d.lower, 'f'), 'user.k', Buffer.from('u'))
  return d
}

const attempt = (fn: () => unknown): string => {
  try {
    const v = fn()
    return v instanceof Buffer ? v.toString() : `ok ${v === undefined ? '' : JSON.stringify(v)}`.trim()
  } catch (err) {
    return errorCode(err) ?? String(err)
  }
}

/**
 * What a user without privileges lists, from a process of its own. It gets the file open (the
 * directories above a mount need not let it through) and lists it through /proc.
 */
function listAs (uid: number, path: string): string {
  const fd = openSync(path, 'r')
  try {
    const res = spawnSync('getfattr', ['--absolute-names', '-m', '-', '/proc/self/fd/3'], { uid, gid: uid, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe', fd] })
    if (res.status !== 0) return `getfattr: ${res.stderr.trim()}`
    return res.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('#')).sort().join(',')
  } finally {
    closeSync(fd)
  }
}

function steps (mnt: string, upper: string): string[] {
  const f = join(mnt, 'f')
  return [
    attempt(() => llistxattr(f).sort()),
    attempt(() => lgetxattr(f, 'trusted.overlay.opaque')),
    attempt(() => lgetxattr(f, 'trusted.overlay.redirect') ?? 'none'),
    listAs(65534, f),
    attempt(() => lsetxattr(f, 'trusted.overlay.mine', Buffer.from('m'))),
    attempt(() => lgetxattr(f, 'trusted.overlay.mine')),
    attempt(() => lremovexattr(f, 'trusted.overlay.opaque')),
    attempt(() => llistxattr(f).sort()),
    // Where the kernel keeps them in the upper.
    attempt(() => llistxattr(join(upper, 'f')).filter((n) => n.startsWith('trusted.overlay.overlay.')).sort())
  ]
}

t.test('trusted.overlay.* names, escaped and private, as on kernel overlayfs', async t => {
  const s = stack(t)
  const k = stack(t)
  const ours = steps(mountStratafs(t, { lowerDirs: [s.lower], upperDir: s.upper, workDir: s.work }), s.upper)
  const kernel = steps(mountKernelOverlay(t, { lowerDirs: [k.lower], upperDir: k.upper, workDir: k.work }), k.upper)
  t.comment(JSON.stringify(ours))
  t.same(ours, kernel, 'every step as on kernel overlayfs')
  t.same(ours[0], 'ok ["trusted.k","trusted.overlay.opaque","user.k"]', 'a layer\'s escaped marker shows unescaped, the overlay\'s own not at all')
  t.same(ours[3], 'user.k', 'an unprivileged process lists no trusted.* names')
  t.same(ours[8], 'ok ["trusted.overlay.overlay.mine"]', 'the user\'s trusted.overlay.* xattr is stored escaped')
})
