import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createLogger } from '../src/log.js'
import { LowerIndex } from '../src/overlay/lower-index.js'
import { Overlay } from '../src/overlay/overlay.js'
import { isMounted, mountStratafs, unmountFuse } from './lib/overlay-mount.js'

/**
 * Reads are answered on the serving thread when the page cache holds the data, and through
 * libuv's pool when it must come from the disk. Both, and a request that straddles the two, must
 * give the same bytes as the file.
 */

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
/** GNU dd with iflag=nocache and no blocks to copy drops a file's clean pages from the cache. */
const dropCache = (file: string): void => { execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']) }

t.test('reads from a cold, a warm and a half-cached lower file', async t => {
  const base = mkdtempSync(join(tmpdir(), 'readcache-'))
  const lower = join(base, 'lower')
  mkdirSync(lower)
  t.teardown(() => { if (!isMounted(join(base, 'mnt'))) rmSync(base, { recursive: true, force: true }) })
  const data = Buffer.alloc(8 * 1024 * 1024 + 123)
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, Math.min(i, data.length - 4))
  const expected = sha(data)
  // In 4 KiB writes: the page cache then holds 4 KiB folios, which can be dropped one by one.
  for (const name of ['cold', 'warm', 'half', 'opened']) {
    const fd = openSync(join(lower, name), 'w')
    for (let off = 0; off < data.length; off += 4096) writeSync(fd, data, off, Math.min(4096, data.length - off))
    closeSync(fd)
  }
  execFileSync('sync')
  dropCache(join(lower, 'cold'))
  dropCache(join(lower, 'opened'))
  readFileSync(join(lower, 'warm'))
  readFileSync(join(lower, 'half'))
  // Holes in the cache at odd offsets, so that 128 KiB requests straddle cached and uncached
  // pages: dd drops what it has read when told nocache.
  const dropRange = (skip: number): void => {
    execFileSync('dd', [`if=${join(lower, 'half')}`, 'of=/dev/null', 'iflag=nocache', 'bs=4k', `skip=${skip}`, 'count=10', 'status=none'])
  }
  for (const skip of [100, 700, 1500]) dropRange(skip)

  // Straight through the overlay first: the request that straddles the first hole is known, and
  // no readahead has filled the hole yet. (This process does not serve a mount.)
  const overlay = new Overlay({ lower: await LowerIndex.build([lower]), log: createLogger('silent') })
  const fh = await overlay.open('/half', 0)
  const buf = Buffer.alloc(128 * 1024)
  const at = 3 * 128 * 1024
  t.equal(await overlay.read(fh, buf, buf.length, at), buf.length, 'a read over the edge of the cache is whole')
  t.ok(buf.equals(data.subarray(at, at + buf.length)), 'and has the file\'s bytes')
  t.equal(await overlay.read(fh, buf, buf.length, data.length - 100), 100, 'a read across the end of the file is short')
  overlay.release(fh)
  dropRange(100)

  const mnt = mountStratafs(t, { lowerDirs: [lower], mountpoint: join(base, 'mnt') })
  t.teardown(() => unmountFuse(mnt))
  for (const name of ['cold', 'warm', 'half']) {
    // Through a process of its own with 1 MiB reads, as cat would; the mount's own cache is new.
    const out = execFileSync('dd', [`if=${join(mnt, name)}`, 'bs=1M', 'status=none'], { maxBuffer: 64 * 1024 * 1024 })
    t.equal(out.length, data.length, `${name}: whole length`)
    t.equal(sha(out), expected, `${name}: same bytes`)
  }

  // Opening a file starts reading its beginning from the disk before the first read asks.
  // fincore (mincore) looks without reading; a RWF_NOWAIT read would itself start a readahead.
  const cachedBytes = (): number => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', join(lower, 'opened')], { encoding: 'utf8' }).trim())
  t.equal(cachedBytes(), 0, 'the lower file starts out of the cache')
  execFileSync('sh', ['-c', `exec 3< ${join(mnt, 'opened')} && sleep 0.3`])
  t.ok(cachedBytes() >= 4096, `an open through the mount brought its beginning in (${cachedBytes()} bytes)`)
})
