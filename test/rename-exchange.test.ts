import { closeSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { errorCode } from '../src/errors.js'
import { renameat2, RENAME_EXCHANGE } from '../src/sys/index.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs } from './lib/overlay-mount.js'
import { stackDirs, type StackDirs } from './lib/stack-dirs.js'

/**
 * renameat2(RENAME_EXCHANGE) on a container, step by step beside kernel overlayfs. The random
 * differential test exchanges names of every kind; this one follows what open descriptors and
 * hard links see, which a tree comparison does not.
 */

function stack (t: Test): StackDirs {
  const d = stackDirs(t, 'exchange')
  mkdirSync(join(d.lower, 'dir'))
  writeFileSync(join(d.lower, 'a'), 'lower a\n')
  writeFileSync(join(d.lower, 'dir/b'), 'lower b\n')
  return d
}

const exchange = (mnt: string, a: string, b: string): string => {
  try {
    renameat2(join(mnt, a), join(mnt, b), RENAME_EXCHANGE)
    return 'ok'
  } catch (err) {
    return errorCode(err) ?? String(err)
  }
}

const readAt = (fd: number): string => {
  const buf = Buffer.alloc(100)
  return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString()
}

/** Runs the same steps on stratafs and on kernel overlayfs, each over its own copy of the stack. */
function onBoth (t: Test, steps: (mnt: string) => string[]): { ours: string[], kernel: string[] } {
  const s = stack(t)
  const k = stack(t)
  const ours = steps(mountStratafs(t, { lowerDirs: [s.lower], upperDir: s.upper, workDir: s.work }))
  const kernel = steps(mountKernelOverlay(t, { lowerDirs: [k.lower], upperDir: k.upper, workDir: k.work }))
  t.comment(`stratafs: ${JSON.stringify(ours)}`)
  return { ours, kernel }
}

t.test('open files follow their file through an exchange', async t => {
  const { ours, kernel } = onBoth(t, mnt => {
    const out: string[] = []
    const readerA = openSync(join(mnt, 'a'), 'r')
    const writerB = openSync(join(mnt, 'dir/b'), 'r+')
    try {
      out.push(exchange(mnt, 'a', 'dir/b'))
      out.push(readFileSync(join(mnt, 'a'), 'utf8'), readFileSync(join(mnt, 'dir/b'), 'utf8'))
      // The writer writes the file now named `a`; the reader, opened on the lower `a` (now named
      // `dir/b`), reads what is written there, as the kernel reopens it on the copy.
      writeFileSync(writerB, 'written b\n')
      writeFileSync(join(mnt, 'dir/b'), 'rewritten a\n')
      out.push(readAt(readerA), readFileSync(join(mnt, 'a'), 'utf8'))
    } finally {
      closeSync(readerA)
      closeSync(writerB)
    }
    out.push(exchange(mnt, 'dir/b', 'a'), readFileSync(join(mnt, 'a'), 'utf8'), readFileSync(join(mnt, 'dir/b'), 'utf8'))
    return out
  })
  t.same(ours, kernel, 'every step answers and reads as on kernel overlayfs')
  t.same(ours.slice(0, 3), ['ok', 'lower b\n', 'lower a\n'], 'the names trade their files')
  t.same(ours.slice(3, 5), ['rewritten a\n', 'written b\n'], 'descriptors opened before keep their files')
})

t.test('two names of one file, a missing name, a lower directory', async t => {
  const { ours, kernel } = onBoth(t, mnt => {
    linkSync(join(mnt, 'a'), join(mnt, 'c'))
    const inoBefore = lstatSync(join(mnt, 'a')).ino
    return [
      exchange(mnt, 'a', 'c'),
      String(lstatSync(join(mnt, 'a')).ino === inoBefore && lstatSync(join(mnt, 'c')).ino === inoBefore),
      exchange(mnt, 'a', 'missing'),
      exchange(mnt, 'missing', 'a'),
      exchange(mnt, 'dir', 'a'),
      exchange(mnt, 'a', 'dir'),
      readFileSync(join(mnt, 'a'), 'utf8')
    ]
  })
  t.same(ours, kernel, 'every step answers as on kernel overlayfs')
  t.same(ours, ['ok', 'true', 'ENOENT', 'ENOENT', 'EXDEV', 'EXDEV', 'lower a\n'], 'hard links stay put, the rest is refused')
})
