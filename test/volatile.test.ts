import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { isMounted, mountStratafs, serverPid } from './lib/overlay-mount.js'
import type { Tap } from './lib/tap.js'

/**
 * `volatile` (kernel overlayfs) and `fsync=0` (fuse-overlayfs), which podman passes for
 * containers it throws away: no fsync or fdatasync reaches the upper, and O_SYNC/O_DSYNC are not
 * passed on, also not to a file copied up by that open. Seen from outside the server, by tracing
 * its syscalls while ordinary tools sync.
 */

/** The syncs and opens the server of `mnt` makes while `run` runs. */
async function traced (t: Tap, mnt: string, run: () => void): Promise<string> {
  const pid = serverPid(mnt)
  t.match(pid, /^\d+$/, 'one server')
  const out = join(mnt, '..', 'strace.out')
  const strace = spawn('strace', ['-f', '-e', 'trace=fsync,fdatasync,openat', '-o', out, '-p', pid], { stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(() => strace.kill('SIGKILL'))
  // strace names each thread as it attaches; the server has several.
  await new Promise<void>((resolve, reject) => {
    let said = ''
    strace.stderr.on('data', (b: Buffer) => {
      said += b.toString()
      if (/attached/.test(said)) setTimeout(resolve, 200)
    })
    strace.on('exit', code => reject(new Error(`strace exited (${code}): ${said}`)))
  })
  run()
  const ended = new Promise(resolve => strace.on('exit', resolve))
  strace.kill('SIGINT')
  await ended
  return readFileSync(out, 'utf8')
}

const dd = (args: string[]): void => {
  const r = spawnSync('dd', ['if=/dev/zero', 'bs=4096', 'count=4', 'status=none', ...args], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`dd ${args.join(' ')}: ${r.stderr}`)
}

for (const option of [undefined, 'volatile', 'fsync=0']) {
  t.test(option === undefined ? 'by default, syncs reach the upper' : `with ${option}, no sync reaches the upper`, async t => {
    const base = mkdtempSync(join(tmpdir(), 'volatile-'))
    const dirs = Object.fromEntries(['l', 'u', 'w', 'mnt'].map(n => [n, join(base, n)]))
    for (const d of Object.values(dirs)) mkdirSync(d)
    writeFileSync(join(dirs.l!, 'lowersync'), 'lower data\n')
    t.teardown(() => {
      if (!isMounted(dirs.mnt!)) rmSync(base, { recursive: true, force: true })
    })
    const mnt = mountStratafs(t, { lowerDirs: [dirs.l!], upperDir: dirs.u, workDir: dirs.w, mountpoint: dirs.mnt, options: option === undefined ? [] : [option] })
    const trace = await traced(t, mnt, () => {
      dd([`of=${join(mnt, 'synced')}`, 'conv=fsync'])
      dd([`of=${join(mnt, 'datasynced')}`, 'conv=fdatasync'])
      dd([`of=${join(mnt, 'osync')}`, 'oflag=sync'])
      dd([`of=${join(mnt, 'lowersync')}`, 'oflag=sync,append', 'conv=notrunc'])
    })
    const syncs = trace.split('\n').filter(l => /\b(fsync|fdatasync)\(/.test(l))
    const opened = (name: string): string[] => trace.split('\n').filter(l => new RegExp(`openat\\(.*/${name}".*O_SYNC`).test(l))
    if (option === undefined) {
      t.ok(syncs.some(l => /\bfsync\(/.test(l)) && syncs.some(l => /\bfdatasync\(/.test(l)), 'fsync and fdatasync reach the upper')
      t.ok(opened('osync').length > 0, 'an O_SYNC open stays O_SYNC')
      t.ok(opened('lowersync').length > 0, 'an O_SYNC open of a lower file stays O_SYNC on its copy')
    } else {
      t.same(syncs, [], 'no fsync or fdatasync')
      t.same([...opened('osync'), ...opened('lowersync')], [], 'O_SYNC is not passed on')
    }
    for (const name of ['synced', 'datasynced', 'osync']) t.equal(readFileSync(join(dirs.u!, name)).length, 16384, `${name}: written`)
    t.equal(readFileSync(join(dirs.u!, 'lowersync')).length, 11 + 16384, 'lowersync: copied up, written')
  })
}
