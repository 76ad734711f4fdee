import { appendFileSync, mkdirSync, readFileSync, readdirSync, renameSync, rmdirSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { lgetxattr } from '../src/sys/index.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs, unmountFuse } from './lib/overlay-mount.js'
import { freshWork, stackDirs } from './lib/stack-dirs.js'
import { diffTrees, snapshot } from './lib/tree.js'

/**
 * Kernel overlayfs with redirect_dir=on (which metacopy=on turns on) renames a directory from
 * the lower layers by moving its upper copy and recording, in a redirect xattr, where its lower
 * directory is. stratafs makes no such renames (EXDEV, as the kernel without redirect_dir), but
 * an upper the kernel wrote must read the same through it, and change as it would on the kernel.
 */
t.test('an upper whose lower directories kernel overlayfs renamed (redirect_dir=on) reads and changes the same through stratafs', async (t) => {
  const d = stackDirs(t, 'redirect-dir')
  const lower = (p: string, content?: string): void => {
    if (content === undefined) mkdirSync(join(d.lower, p), { recursive: true })
    else writeFileSync(join(d.lower, p), content)
  }
  lower('a/sub')
  lower('b')
  lower('a/f1', 'f1\n')
  lower('a/gone', 'gone\n')
  lower('a/sub/f2', 'f2\n')
  lower('b/x', 'x\n')
  const layers = { lowerDirs: [d.lower], upperDir: d.upper, options: ['redirect_dir=on'] }

  const kmnt = mountKernelOverlay(t, { ...layers, workDir: freshWork(d, 'k1') })
  const k = (p: string): string => join(kmnt, p)
  renameSync(k('a'), k('z'))
  mkdirSync(k('n'))
  renameSync(k('b'), k('n/b2'))
  renameSync(k('z/sub'), k('z/sub2'))
  unlinkSync(k('z/gone'))
  appendFileSync(k('z/f1'), 'kernel\n')
  const kernel = snapshot(kmnt)
  t.equal(spawnSync('umount', [kmnt]).status, 0, 'the kernel mount ends')
  const redirect = (p: string): string | undefined => lgetxattr(join(d.upper, p), 'trusted.overlay.redirect')?.toString()
  t.same([redirect('z'), redirect('n/b2'), redirect('z/sub2')], ['a', '/b', 'sub'], 'the kernel left relative and absolute redirects')

  const smnt = mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: freshWork(d, 's') })
  const s = (p: string): string => join(smnt, p)
  t.same(diffTrees(kernel, snapshot(smnt), { names: ['kernel', 'stratafs'] }), [], 'stratafs shows the tree the kernel showed')
  t.equal(readFileSync(s('z/sub2/f2'), 'utf8'), 'f2\n', 'a file below two redirects reads its lower data')
  appendFileSync(s('n/b2/x'), 'stratafs\n')
  t.equal(readFileSync(s('n/b2/x'), 'utf8'), 'x\nstratafs\n', 'a copy-up below a redirect copies the redirected lower file')
  unlinkSync(s('z/sub2/f2'))
  t.same(readdirSync(s('z/sub2')), [], 'a lower file removed below a redirect is gone')
  rmdirSync(s('z/sub2'))
  t.same(readdirSync(s('z')).sort(), ['f1'], 'so is the redirected directory removed')
  const changed = snapshot(smnt)
  t.equal(unmountFuse(smnt), undefined, 'stratafs unmounts')

  const again = mountKernelOverlay(t, { ...layers, workDir: freshWork(d, 'k2') })
  t.same(diffTrees(changed, snapshot(again), { names: ['stratafs', 'kernel'] }), [], 'and the kernel reads what stratafs changed')
})

t.test('under userxattr a directory\'s redirect is not followed: it answers EPERM, as on kernel overlayfs (redirect_dir=nofollow)', async (t) => {
  const d = stackDirs(t, 'redirect-user')
  mkdirSync(join(d.lower, 'b'))
  writeFileSync(join(d.lower, 'b/x'), 'x\n')
  mkdirSync(join(d.upper, 'z'))
  writeFileSync(join(d.upper, 'kept'), 'kept\n')
  spawnSync('setfattr', ['-n', 'user.overlay.redirect', '-v', '/b', join(d.upper, 'z')])
  t.equal(lgetxattr(join(d.upper, 'z'), 'user.overlay.redirect')?.toString(), '/b', 'an upper directory with a user redirect')
  const seen = (mount: typeof mountStratafs, name: string): string[] => {
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: freshWork(d, name), options: ['userxattr'] })
    let z: string
    try {
      z = readdirSync(join(mnt, 'z')).join(',')
    } catch (err) {
      z = (err as NodeJS.ErrnoException).code ?? String(err)
    }
    const out = [readdirSync(mnt).sort().join(','), z, readFileSync(join(mnt, 'kept'), 'utf8')]
    if (mount === mountStratafs) unmountFuse(mnt)
    else spawnSync('umount', [mnt])
    return out
  }
  const kernel = seen(mountKernelOverlay, 'k')
  t.same(kernel, ['b,kept,z', 'EPERM', 'kept\n'], 'kernel: listed, refused')
  t.same(seen(mountStratafs, 's'), kernel, 'stratafs: the same')
})

t.test('invalid redirects (a `..`, a relative path, an empty name) answer EINVAL, as on kernel overlayfs, and lead nowhere', async (t) => {
  const d = stackDirs(t, 'redirect-invalid')
  mkdirSync(join(d.lower, 'b'))
  writeFileSync(join(d.lower, 'b/x'), 'x\n')
  writeFileSync(join(d.lower, 'f'), 'lower f\n')
  const invalid: Record<string, string> = { z1: '../b', z2: 'b/x', z3: '//b' }
  for (const [dir, value] of Object.entries(invalid)) {
    mkdirSync(join(d.upper, dir))
    spawnSync('setfattr', ['-n', 'trusted.overlay.redirect', '-v', value, join(d.upper, dir)])
  }
  // A metadata-only copy of f, in the kernel's format, whose redirect climbs out.
  writeFileSync(join(d.upper, 'f'), '')
  truncateSync(join(d.upper, 'f'), 8)
  spawnSync('setfattr', ['-n', 'trusted.overlay.metacopy', join(d.upper, 'f')])
  spawnSync('setfattr', ['-n', 'trusted.overlay.redirect', '-v', '../../f', join(d.upper, 'f')])
  t.equal(lgetxattr(join(d.upper, 'f'), 'trusted.overlay.redirect')?.toString(), '../../f', 'the hostile upper is in place')
  const seen = (mount: typeof mountStratafs, name: string): string[] => {
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: freshWork(d, name), options: ['metacopy=on'] })
    const code = (fn: () => unknown): string => {
      try {
        return String(fn())
      } catch (err) {
        return (err as NodeJS.ErrnoException).code ?? String(err)
      }
    }
    const out = [readdirSync(mnt).sort().join(','), ...['z1', 'z2', 'z3'].map(dir => code(() => readdirSync(join(mnt, dir)).join(','))), code(() => readFileSync(join(mnt, 'f'), 'utf8'))]
    if (mount === mountStratafs) unmountFuse(mnt)
    else spawnSync('umount', [mnt])
    return out
  }
  const kernel = seen(mountKernelOverlay, 'k')
  t.same(kernel, ['b,f,z1,z2,z3', 'EINVAL', 'EINVAL', 'EINVAL', 'EINVAL'], 'kernel: listed, refused')
  t.same(seen(mountStratafs, 's'), kernel, 'stratafs: the same')
})
