import { spawnSync } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { release, tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { findServerPid } from '../src/bench/implementations.js'
import { mountKernelOverlay } from './lib/kernel-overlay.js'
import { mountStratafs } from './lib/overlay-mount.js'

/**
 * FUSE passthrough (Linux 6.9 and later): a file opened through the mount is read and written by
 * the kernel through the overlay's own descriptor of the upper or lower file, with no request to
 * the server. What a user can see: reads need no round trip, and one file open several times
 * while it is copied up still works as on kernel overlayfs (the kernel takes one backing file per
 * inode and fails an open that would mix passthrough with its page cache).
 */

const [major = 0, minor = 0] = release().split('.').map(Number)
const skip = major > 6 || (major === 6 && minor >= 9) ? false : `FUSE passthrough needs Linux 6.9 or later (this is ${release()})`

function stack (): { base: string, lower: string, upper: string, work: string } {
  const base = mkdtempSync(join(tmpdir(), 'passthrough-'))
  const dirs = { base, lower: join(base, 'lower'), upper: join(base, 'upper'), work: join(base, 'work') }
  for (const d of [dirs.lower, dirs.upper, dirs.work]) mkdirSync(d)
  return dirs
}

/**
 * Opens `name` on the mount, stops the server, and reads the file in a child with a time limit
 * (a read waiting on the stopped server must not hang the test): whether the read needed the
 * server, and what it got.
 */
function readWhileStopped (t: Test, mnt: string, name: string): { answered: boolean, data: string } {
  const pid = findServerPid(mnt)
  if (pid === undefined) throw new Error(`no server found for ${mnt}`)
  // The first close on a mount asks the server to flush (it declines, and the kernel stops
  // asking): that first close must not be the stopped server's to answer.
  t.equal(readFileSync(join(mnt, 'other'), 'utf8'), 'other\n', 'another file read and closed first')
  // Never read through the mount before: no page of it is cached, so without passthrough the
  // read is a READ request.
  const fd = openSync(join(mnt, name), 'r')
  process.kill(pid, 'SIGSTOP')
  try {
    const res = spawnSync('head', ['-c', '100'], { stdio: [fd, 'pipe', 'pipe'], timeout: 2000 })
    return { answered: res.signal === null, data: res.stdout.toString() }
  } finally {
    process.kill(pid, 'SIGCONT')
    closeSync(fd)
  }
}

t.test('which open files are read without a request', { skip }, async t => {
  const cases = [
    { what: 'an upper file', writable: true, in: 'upper', passthrough: true },
    { what: 'a lower file on a read-only stack', writable: false, in: 'lower', passthrough: true },
    // It may be copied up while open, and the kernel passes one file per inode through.
    { what: 'a lower file on a writable stack', writable: true, in: 'lower', passthrough: false }
  ] as const
  for (const c of cases) {
    const d = stack()
    t.teardown(() => rmSync(d.base, { recursive: true, force: true }))
    writeFileSync(join(c.in === 'upper' ? d.upper : d.lower, 'a'), 'data of a\n')
    writeFileSync(join(d.lower, 'other'), 'other\n')
    const mnt = c.writable
      ? mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work })
      : mountStratafs(t, { lowerDirs: [d.lower] })
    const read = readWhileStopped(t, mnt, 'a')
    if (c.passthrough) {
      t.ok(read.answered, `${c.what}: read while the server was stopped`)
      t.equal(read.data, 'data of a\n', `${c.what}: with its data`)
    } else {
      t.notOk(read.answered, `${c.what}: the read waits for the server`)
      t.equal(readFileSync(join(mnt, 'a'), 'utf8'), 'data of a\n', `${c.what}: and gets its data once it runs`)
    }
  }
})

t.test('a file copied up while open for reading, on stratafs and kernel overlayfs', { skip }, async t => {
  const seen = (name: string, mount: (d: ReturnType<typeof stack>) => string): string[] => {
    const d = stack()
    t.teardown(() => rmSync(d.base, { recursive: true, force: true }))
    writeFileSync(join(d.lower, 'b'), 'lower b\n')
    const mnt = mount(d)
    const out: string[] = []
    const reader = openSync(join(mnt, 'b'), 'r')
    const readerSees = (): string => {
      const buf = Buffer.alloc(100)
      return buf.subarray(0, readSync(reader, buf, 0, 100, 0)).toString()
    }
    try {
      // Copies it up while `reader` holds the lower file: the upper copy is another file, which
      // the reader sees from then on on kernel overlayfs.
      const writer = openSync(join(mnt, 'b'), 'a')
      try {
        writeFileSync(writer, 'more\n')
      } finally {
        closeSync(writer)
      }
      out.push(readerSees())
      out.push(readFileSync(join(mnt, 'b'), 'utf8'))
      out.push(readerSees())
    } finally {
      closeSync(reader)
    }
    out.push(readFileSync(join(mnt, 'b'), 'utf8'))
    t.comment(`${name}: ${JSON.stringify(out)}`)
    return out
  }
  const ours = seen('stratafs', d => mountStratafs(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work }))
  const kernel = seen('kernel', d => mountKernelOverlay(t, { lowerDirs: [d.lower], upperDir: d.upper, workDir: d.work }))
  t.same(ours, kernel, 'the first reader, a third open, the reader again and a read after both closed see what they see on kernel overlayfs')
  t.equal(ours[1], 'lower b\nmore\n', 'the copy-up holds the write')
})
