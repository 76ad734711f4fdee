import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { errorCode } from '../src/errors.js'
import { lgetxattr } from '../src/sys/index.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs } from './lib/overlay-mount.js'
import { stackDirs } from './lib/stack-dirs.js'

/**
 * A rename of a directory onto a non-empty one fails with ENOTEMPTY, but when the upper holds
 * the destination whole, kernel overlayfs has marked the moved directory opaque by then (its
 * rename of the upper copies is what fails) and leaves the marker. stratafs leaves the same upper.
 */
t.test('a rename refused as ENOTEMPTY leaves the upper as the kernel leaves it', async t => {
  const dirs = ['src', 'src2', 'merged/full']
  const run = (mount: typeof mountStratafs): { answers: string[], marked: string[], copiedUp: boolean } => {
    const d = stackDirs(t, 'rename-refused')
    mkdirSync(join(d.lower, 'merged'))
    writeFileSync(join(d.lower, 'merged/keep'), 'lower\n')
    mkdirSync(join(d.lower, 'low/full'), { recursive: true })
    writeFileSync(join(d.lower, 'low/full/x'), 'lower\n')
    const mnt = mount(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work })
    // `src` and `src2` are new, so the upper holds them whole; so it does `merged/full`.
    for (const dir of ['src', 'src2', 'merged/full']) mkdirSync(join(mnt, dir))
    writeFileSync(join(mnt, 'merged/full/y'), 'upper\n')
    const rename = (from: string, to: string): string => {
      try {
        renameSync(join(mnt, from), join(mnt, to))
        return 'ok'
      } catch (err) {
        return errorCode(err) ?? String(err)
      }
    }
    const answers = [rename('src', 'merged/full'), rename('src2', 'low/full')]
    return {
      answers,
      marked: dirs.filter(p => lgetxattr(join(d.upper, p), 'trusted.overlay.opaque')?.toString() === 'y'),
      copiedUp: existsSync(join(d.upper, 'low'))
    }
  }
  const kernel = run(mountKernelOverlay)
  t.same(kernel, { answers: ['ENOTEMPTY', 'ENOTEMPTY'], marked: ['src'], copiedUp: false },
    'kernel: both refused; the directory bound for a merged parent is marked; nothing is copied up')
  t.same(run(mountStratafs), kernel, 'stratafs: the same')
})
