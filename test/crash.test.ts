import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startDaemon } from './lib/daemon.js'

/**
 * The daemon killed with SIGKILL in the middle of copying up a 256 MiB file: after the stale
 * mount is cleaned and the container mounted again, the file shows its old content or its whole
 * new content, nothing partial, and no temporary file is left in the work directory.
 *
 * Copy-ups fill a spare file made ahead of time (`work/stratafs-spare`) before renaming it into
 * place, so the interrupted copy is found there; after the restart only untouched spares remain.
 */

const SIZE = 256 * 1024 * 1024
const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

t.test('SIGKILL during the copy-up of a 256 MiB file', async t => {
  const d = await startDaemon(t)
  const layer = d.dir('layer')
  mkdirSync(layer, { recursive: true })
  // Incompressible, non-sparse data, so the copy takes long enough to be interrupted.
  const fd = openSync(join(layer, 'big'), 'w')
  const chunk = Buffer.alloc(8 * 1024 * 1024)
  for (let i = 0; i < SIZE / chunk.length; i++) {
    for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((i * 2654435761 + j * 40503) >>> 0, j)
    writeSync(fd, chunk)
  }
  closeSync(fd)
  const before = sha(readFileSync(join(layer, 'big')))
  t.equal((await d.cli(['image', 'create', 'big:1', layer])).code, 0, 'image created')
  const mnt = d.dir('mnt')
  mkdirSync(mnt, { recursive: true })
  t.equal((await d.cli(['mount', 'big:1', mnt, '--name', 'c'])).code, 0, 'container mounted')
  const container = JSON.parse((await d.cli(['ps', '--json'])).stdout).find((c: { name: string }) => c.name === 'c')
  t.ok(container, 'ps lists the container')
  const workDir = join(d.root, 'containers', container.id, 'work')
  const work = join(workDir, 'work')
  const spareDir = join(workDir, 'stratafs-spare')
  const filling = (): boolean => readdirSync(spareDir).some(name => lstatSync(join(spareDir, name)).size > 0)

  // The writer is its own process: it will see the connection abort when the daemon dies.
  const writer = spawn('sh', ['-c', `printf tail >> ${mnt}/big`], { stdio: 'ignore' })
  const writerDone = new Promise(resolve => writer.on('exit', resolve))
  let seen = false
  for (let i = 0; i < 2000 && !seen; i++) {
    seen = readdirSync(work).length > 0 || filling()
    if (!seen) await new Promise(resolve => setTimeout(resolve, 2))
  }
  t.ok(seen, 'a copy-up was under way in the work directory')
  d.proc.kill('SIGKILL')
  await d.exited
  await writerDone

  const d2 = await startDaemon(t, { root: d.root })
  t.equal((await d2.cli(['mount', 'big:1', mnt, '--name', 'c'])).code, 0, 'mounted again after the crash')
  const after = readFileSync(join(mnt, 'big'))
  const whole = sha(Buffer.concat([readFileSync(join(layer, 'big')), Buffer.from('tail')]))
  t.ok(sha(after) === before || sha(after) === whole, `old or complete new content (${after.length} bytes)`)
  t.same(readdirSync(work), [], 'no temporary file left in the work directory')
  t.notOk(filling(), 'the interrupted copy is not kept as a spare')
  t.equal((await d2.cli(['umount', mnt])).code, 0, 'unmounted')
})
