import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { cliMain } from './lib/daemon.js'

/**
 * `stratafs bench` at its tiniest: the JSON it prints has the promised shape and every mount it
 * made is gone afterwards, also when it is interrupted. Nothing here looks at a timing.
 */

const IMPLS = ['plain', 'kernel', 'fuse-overlayfs', 'unionfs', 'stratafs']

function mountsUnder (dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map(line => line.split(' ')[4] ?? '')
    .filter(p => p === dir || p.startsWith(dir + '/'))
}

interface Cell { median: number; p99: number; samples: number }

t.test('bench --tiny --json: shape, ratios, chart, nothing left mounted', async t => {
  const dir = t.testdir()
  const svg = join(dir, 'chart.svg')
  const res = spawnSync(process.execPath, [cliMain, 'bench', '--tiny', '--json', '--cpu-pin', 'none', '--svg', svg], {
    env: { ...process.env, TMPDIR: dir }, encoding: 'utf8', timeout: 300_000
  })
  t.equal(res.status, 0, res.stderr)
  const report = JSON.parse(res.stdout)
  t.equal(report.plan, 'tiny')
  t.equal(report.cpuPin, 'none')
  t.equal(report.cpu, null)
  t.type(report.machine.cpu, 'string')
  t.type(report.machine.nproc, 'number')
  t.same(report.implementations.map((i: { name: string }) => i.name), IMPLS)
  const ran: string[] = report.implementations.filter((i: { ran: boolean }) => i.ran).map((i: { name: string }) => i.name)
  for (const skipped of report.implementations.filter((i: { ran: boolean }) => !i.ran)) t.type(skipped.reason, 'string')
  t.ok(ran.includes('plain') && ran.includes('stratafs'), 'the floor and stratafs always run')
  const ids = report.rows.map((r: { id: string }) => r.id)
  for (const id of ['copyup-4096', 'second-4096', 'chmod', 'stat-cold-1', 'stat-warm-4', 'mount-4', 'readdir-cold',
    'read-cold', 'read-warm', 'write', 'churn', 'find-cold', 'tar-warm']) {
    t.ok(ids.includes(id), `row ${id}`)
  }
  for (const row of report.rows) {
    t.ok(['µs', 'ms', 'MiB/s'].includes(row.unit), `${row.id} unit`)
    t.same(Object.keys(row.results).sort(), [...ran].sort(), `${row.id}: a result or null per implementation`)
    for (const impl of ran) {
      const cell = row.results[impl] as Cell | null
      if (cell === null) continue
      t.ok(cell.median >= 0 && cell.p99 >= 0 && cell.samples > 0, `${row.id} ${impl} cell`)
      t.ok(impl in row.ratioToKernel && impl in row.ratioToFuseOverlayfs, `${row.id} ${impl} ratios`)
    }
  }
  const copyUp = report.rows.find((r: { id: string }) => r.id === 'copyup-4096')
  t.equal(copyUp.results.stratafs.samples, 5, 'one sample per lower file')
  t.same(copyUp.point, { chart: 'copy-up', x: 4096 })
  t.same(report.notes.filter((n: string) => /found|listed/.test(n)), [], 'every implementation saw the right paths and entries')
  const chart = readFileSync(svg, 'utf8')
  t.match(chart, /^<svg /)
  t.match(chart, /<polyline/)
  t.same(mountsUnder(dir), [], 'no mount left behind')
  t.same(readdirSync(dir).filter(n => n.startsWith('stratafs-bench-')), [], 'scratch removed')
})

t.test('Ctrl-C during a run unmounts what it mounted', async t => {
  const dir = t.testdir()
  const child = spawn(process.execPath, [cliMain, 'bench', '--tiny', '--cpu-pin', 'none', '--only', 'stratafs,kernel', '--svg', join(dir, 'c.svg')], {
    env: { ...process.env, TMPDIR: dir }, stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  const deadline = Date.now() + 120_000
  while (mountsUnder(dir).length === 0 && child.exitCode === null && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.ok(mountsUnder(dir).length > 0, 'caught it with a mount up')
  child.kill('SIGINT')
  const code = await exited
  t.not(code, 0, 'an interrupted run fails')
  t.match(stderr, /interrupted/)
  t.same(mountsUnder(dir), [], 'no mount left behind')
  t.same(readdirSync(dir).filter(n => n.startsWith('stratafs-bench-')), [], 'scratch removed')
})

t.test('--workload runs only the groups named; an unknown one is a usage error', async t => {
  const dir = t.testdir()
  const res = spawnSync(process.execPath, [cliMain, 'bench', '--tiny', '--json', '--cpu-pin', 'none', '--only', 'plain,stratafs',
    '--workload', 'readdir,find', '--svg', join(dir, 'c.svg')], { env: { ...process.env, TMPDIR: dir }, encoding: 'utf8', timeout: 300_000 })
  t.equal(res.status, 0, res.stderr)
  const ids = JSON.parse(res.stdout).rows.map((r: { id: string }) => r.id).sort()
  t.same(ids, ['find-cold', 'find-warm', 'readdir-cold', 'readdir-warm'], 'only the readdir and find rows')
  const bad = spawnSync(process.execPath, [cliMain, 'bench', '--workload', 'copy-up,lookups'], { encoding: 'utf8' })
  t.equal(bad.status, 2, 'a usage error')
  t.match(bad.stderr, /--workload: unknown lookups \(known: copy-up, stat, readdir, find, tar\)/)
  t.same(mountsUnder(dir), [], 'no mount left behind')
})
