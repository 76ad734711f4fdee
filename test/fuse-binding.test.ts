import t from 'tap'
import { execFileSync, fork, spawnSync, type ChildProcess } from 'node:child_process'
import {
  chmodSync, closeSync, constants, ftruncateSync, fstatSync, linkSync, mkdirSync, mkdtempSync, opendirSync, openSync,
  lstatSync, readdirSync, readFileSync, readSync, rmSync, statfsSync, statSync, writeFileSync, writeSync
} from 'node:fs'
import type { Dirent as NodeDirent } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import koffi from 'koffi'

/**
 * The FUSE session binding end to end: a small in-memory filesystem written against FuseSession's
 * low-level handlers, served by a child process (the serving process must never touch its own
 * mount), driven from here with ordinary syscalls. The child reports every request it handles
 * over IPC so the test can see what reached JS, and in what shape.
 */

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const BIG_INO = 2 ** 40 + 5
const FIFO_INO = 2 ** 40 + 6
const UTF8_INO = 3 * 2 ** 32 + 9
const MANY = 3000
const MANY_INO = 2 ** 33
const GiB = 2 ** 30
const UTIME_NOW = (1 << 30) - 1
const UTIME_OMIT = (1 << 30) - 2
/** setattr's `toSet` bits, as libfuse's low-level API hands them on. */
const SET = { mode: 1, size: 8, atime: 16, mtime: 32, atimeNow: 128, mtimeNow: 256 }

const server = `
import { FuseSession } from ${JSON.stringify(join(root, 'dist/fuse/session.js'))}
import { direntBuffer, direntPlusSlice, direntSlice } from ${JSON.stringify(join(root, 'dist/fuse/dir-listing.js'))}

const ENOENT = 2, EEXIST = 17, ERANGE = 34, ENOSYS = 38, ENODATA = 61
const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFIFO = 0o010000
const SET_MODE = 1, SET_SIZE = 8, SET_ATIME = 16, SET_MTIME = 32, SET_ATIME_NOW = 128, SET_MTIME_NOW = 256
const GiB = ${GiB}
const then = [1_700_000_000, 123_456_789]
const now = () => { const ms = Date.now(); return [Math.floor(ms / 1000), (ms % 1000) * 1e6] }

let nextIno = 1000
const inode = (mode, extra = {}) => ({
  ino: nextIno++, mode, nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1, uid: 0, gid: 0, size: 0, data: Buffer.alloc(0),
  atime: then, mtime: then, ctime: then, xattrs: new Map(), entries: (mode & S_IFMT) === S_IFDIR ? new Map() : undefined,
  ...extra
})
const file = (data, extra = {}) => inode(S_IFREG | 0o644, { data: Buffer.from(data), size: Buffer.byteLength(data), ...extra })
const attrOf = i => ({
  ino: i.ino, mode: i.mode, nlink: i.nlink, uid: i.uid, gid: i.gid, rdev: 0, size: i.size, blocks: 0, blksize: 4096,
  atime: i.atime, mtime: i.mtime, ctime: i.ctime
})

/** Serves one tree; each mount has its own node table, as each session has its own kernel inodes. */
const sessions = new Map()
function serve (tag, mnt, top, { timeout, invalidateOnLink = false }) {
  const nodes = new Map([[1, { id: 1, inode: top, name: '/', key: null, lookups: Infinity }]])
  const byKey = new Map()
  const handles = new Map()
  const dirs = new Map()
  const pending = []
  let nextId = 2
  let nextFh = 10
  let session
  const report = (op, extra) => process.send({ op, tag, ...extra })
  const node = id => nodes.get(id)
  const inodeOf = id => nodes.get(id)?.inode
  const nameOf = id => nodes.get(id)?.name
  const listed = (fh, offset) => {
    const dir = dirs.get(fh)
    if (offset === 0 || dir.listing === undefined) {
      dir.listing = direntBuffer([...dir.inode.entries].map(([name, i]) => ({ name, mode: i.mode, ino: i.ino })))
    }
    return dir
  }
  // A name's node: one per (directory, name), so a second name of a file is a node of its own.
  const enter = (parent, name, i) => {
    const key = parent + '/' + name
    let id = byKey.get(key)
    if (id === undefined || node(id).inode !== i) {
      id = nextId++
      byKey.set(key, id)
      nodes.set(id, { id, inode: i, name, key, lookups: 0 })
    }
    node(id).lookups++
    return id
  }
  const handlers = {
    init () { report('mounted') },
    exit () { report('exit') },
    lookup (req, parent, name) {
      report('lookup', { node: parent, name, caller: session.caller() })
      const i = inodeOf(parent)?.entries?.get(name)
      if (i === undefined) return session.noEntry(req, 0)
      session.entry(req, enter(parent, name, i), attrOf(i), timeout, timeout)
    },
    forget (id, lookups) {
      const n = node(id)
      if (n === undefined || id === 1) return
      n.lookups -= lookups
      if (n.lookups > 0) return
      nodes.delete(id)
      if (byKey.get(n.key) === id) byKey.delete(n.key)
    },
    getattr (req, id, fh) {
      report('getattr', { node: id, name: nameOf(id), fh, caller: session.caller() })
      const i = inodeOf(id)
      if (i === undefined) return session.err(req, ENOENT)
      session.attr(req, attrOf(i), timeout)
    },
    setattr (req, id, toSet, mode, uid, gid, size, atime, atimeNs, mtime, mtimeNs, fh) {
      report('setattr', { node: id, name: nameOf(id), toSet, mode, size, atime, atimeNs, mtime, mtimeNs, fh })
      const i = inodeOf(id)
      if (i === undefined) return session.err(req, ENOENT)
      if (toSet & SET_MODE) i.mode = (i.mode & S_IFMT) | (mode & 0o7777)
      if (toSet & SET_SIZE) {
        // Bytes past the stored data read as zeros, so a large size costs nothing.
        i.size = size
        i.data = i.data.subarray(0, Math.min(size, i.data.length))
      }
      if (toSet & SET_ATIME) i.atime = toSet & SET_ATIME_NOW ? now() : [atime, atimeNs]
      if (toSet & SET_MTIME) i.mtime = toSet & SET_MTIME_NOW ? now() : [mtime, mtimeNs]
      session.attr(req, attrOf(i), timeout)
    },
    readlink (req, id) {
      const i = inodeOf(id)
      if (i?.target === undefined) return session.err(req, ENOENT)
      session.readlink(req, i.target)
    },
    mknod (req) { session.err(req, ENOSYS) },
    mkdir (req) { session.err(req, ENOSYS) },
    rmdir (req) { session.err(req, ENOSYS) },
    symlink (req) { session.err(req, ENOSYS) },
    rename (req) { session.err(req, ENOSYS) },
    fsync (req) { session.err(req, ENOSYS) },
    removexattr (req) { session.err(req, ENOSYS) },
    fallocate (req, id, mode, offset, length, fh) {
      report('fallocate', { node: id, mode, offset, length, fh })
      session.ok(req)
    },
    // Answers half of what was asked, so the count is seen to come back.
    copyFileRange (req, fh, offset, fhOut, offsetOut, length) {
      report('copyFileRange', { fh, offset, fhOut, offsetOut, length })
      session.written(req, Math.floor(length / 2))
    },
    // Data starts 7 bytes on, so the answer is seen to come back.
    lseek (req, id, offset, whence, fh) {
      report('lseek', { node: id, offset, whence, fh })
      session.offset(req, offset + 7)
    },
    unlink (req, parent, name) {
      report('unlink', { node: parent, name })
      const dir = inodeOf(parent)
      const i = dir?.entries?.get(name)
      if (i === undefined) return session.err(req, ENOENT)
      dir.entries.delete(name)
      i.nlink--
      byKey.delete(parent + '/' + name)
      session.ok(req)
    },
    link (req, id, newParent, newName) {
      const i = inodeOf(id)
      const dir = inodeOf(newParent)
      if (i === undefined || dir?.entries === undefined) return session.err(req, ENOENT)
      if (dir.entries.has(newName)) return session.err(req, EEXIST)
      dir.entries.set(newName, i)
      i.nlink++
      // The new name gets a node of its own, so the kernel's copy of the old node's attributes
      // (nlink 1) would outlive the change. Names starting 'stale-' leave it, to show it does.
      const invalidated = invalidateOnLink && !newName.startsWith('stale-')
      if (invalidated) session.invalidateAttr(id)
      const newId = enter(newParent, newName, i)
      report('link', { node: id, name: newName, newNode: newId, invalidated })
      session.entry(req, newId, attrOf(i), timeout, timeout)
    },
    open (req, id, flags) {
      const fh = nextFh++
      handles.set(fh, inodeOf(id))
      report('open', { node: id, name: nameOf(id), flags, fh })
      session.open(req, fh, 0)
    },
    create (req, parent, name, mode, flags) {
      const dir = inodeOf(parent)
      const i = inode(mode)
      dir.entries.set(name, i)
      const fh = nextFh++
      handles.set(fh, i)
      const id = enter(parent, name, i)
      report('create', { node: parent, name, mode, flags, fh, newNode: id })
      session.create(req, id, attrOf(i), timeout, fh, 0, 0)
    },
    read (req, id, size, offset, fh) {
      report('read', { node: id, name: nameOf(id), size, offset, fh })
      const i = handles.get(fh)
      const length = Math.max(0, Math.min(size, i.size - offset))
      if (i.sparse) return session.buf(req, Buffer.alloc(length, Math.floor(offset / GiB) & 0xff))
      const answer = () => {
        const out = Buffer.alloc(length)
        if (offset < i.data.length) i.data.copy(out, 0, offset, Math.min(i.data.length, offset + length))
        session.buf(req, out)
      }
      if (i.slow && offset === 0) pending.push(answer)
      else answer()
    },
    write (req, id, data, offset, fh) {
      report('write', { node: id, name: nameOf(id), size: data.length, offset, fh })
      const i = handles.get(fh)
      const end = offset + data.length
      if (!i.sparse) {
        const grown = Buffer.alloc(Math.max(i.data.length, end))
        i.data.copy(grown)
        data.copy(grown, offset)
        i.data = grown
      }
      i.size = Math.max(i.size, end)
      session.written(req, data.length)
    },
    release (req, id, fh) {
      report('release', { node: id, name: nameOf(id), fh })
      handles.delete(fh)
      session.ok(req)
    },
    opendir (req, id) {
      const fh = nextFh++
      dirs.set(fh, { inode: inodeOf(id) })
      report('opendir', { node: id, name: nameOf(id), fh })
      session.open(req, fh, 0)
    },
    readdir (req, id, size, offset, fh) {
      report('readdir', { node: id, name: nameOf(id), size, offset, fh })
      session.buf(req, direntSlice(listed(fh, offset).listing, offset, size))
    },
    // Reported as a readdir (plus: true): what the tests count holds for both.
    readdirplus (req, id, size, offset, fh) {
      report('readdir', { node: id, name: nameOf(id), size, offset, fh, plus: true })
      const dir = listed(fh, offset)
      session.buf(req, direntPlusSlice(dir.listing, offset, size, name => {
        const i = dir.inode.entries.get(name)
        return { node: enter(id, name, i), attr: attrOf(i), entryTimeout: timeout, attrTimeout: timeout }
      }))
    },
    releasedir (req, id, fh) {
      dirs.delete(fh)
      session.ok(req)
    },
    statfs (req) {
      session.statfs(req, {
        bsize: 4096, frsize: 4096, blocks: 2 ** 40, bfree: 2 ** 39 + 1, bavail: 2 ** 39, files: 2 ** 35, ffree: 2 ** 34 + 1,
        favail: 2 ** 34, namemax: 255
      })
    },
    setxattr (req, id, name, value, flags) {
      report('setxattr', { node: id, name, flags })
      inodeOf(id).xattrs.set(name, value)
      session.ok(req)
    },
    getxattr (req, id, name, size) {
      report('getxattr', { node: id, name, size })
      const value = inodeOf(id)?.xattrs.get(name)
      if (value === undefined) session.err(req, ENODATA)
      else if (size === 0) session.xattrSize(req, value.length)
      else if (value.length > size) session.err(req, ERANGE)
      else session.buf(req, value)
    },
    listxattr (req, id, size) {
      report('listxattr', { node: id, size })
      const list = Buffer.from([...inodeOf(id).xattrs.keys()].map(n => n + '\\0').join(''))
      if (size === 0) session.xattrSize(req, list.length)
      else if (list.length > size) session.err(req, ERANGE)
      else session.buf(req, list)
    }
  }
  session = new FuseSession(mnt, [\`fsname=bindingtest-\${tag}\`, 'subtype=bindingtest', 'allow_other', 'default_permissions'], handlers)
  sessions.set(tag, { session, pending })
}

const dir = (entries, extra = {}) => {
  const d = inode(S_IFDIR | 0o755, extra)
  for (const [name, i] of Object.entries(entries)) d.entries.set(name, i)
  return d
}

const big = file('hello', { ino: ${BIG_INO} })
big.xattrs.set('user.ten', Buffer.from('0123456789'))
const many = dir({}, { ino: 6 })
for (let n = 0; n < ${MANY}; n++) many.entries.set('f' + String(n).padStart(4, '0'), file('', { ino: ${MANY_INO} + n }))
const main = dir({
  big,
  sparse: inode(S_IFREG | 0o666, { ino: 3, size: 6 * GiB, sparse: true }),
  slow: file('late answer', { ino: 5, slow: true }),
  times: file('t', { ino: 8 }),
  many,
  types: dir({
    dir: dir({}, { ino: 7 }),
    fifo: inode(S_IFIFO | 0o644, { ino: ${FIFO_INO} }),
    file: file('x', { ino: 11 }),
    'ünï-名': inode(S_IFLNK | 0o777, { ino: ${UTF8_INO}, target: 'file', size: 4 })
  }, { ino: 9 })
}, { ino: 1 })
const cached = dir({ solo: file('s', { ino: 21 }), other: file('o', { ino: 22 }), plain: file('p', { ino: 23 }) }, { ino: 1 })

const [mnt, cachedMnt] = process.argv.slice(2)
serve('main', mnt, main, { timeout: 0 })
serve('cached', cachedMnt, cached, { timeout: 3600, invalidateOnLink: true })

process.on('message', m => {
  if (m === 'ping') return process.send({ op: 'pong' })
  const s = sessions.get(m.tag)
  switch (m.cmd) {
    case 'mount':
      serve(m.tag, m.mnt, dir({ slow: file('late answer', { ino: 5, slow: true }) }, { ino: 1 }), { timeout: 0 })
      break
    case 'mount-listed':
      serve(m.tag, m.mnt, dir({
        a: file('aa', { ino: ${BIG_INO} + 1, mtime: [1_600_000_000, 7] }),
        d: dir({}, { ino: 31 }),
        l: inode(S_IFLNK | 0o777, { ino: 32, target: 'a', size: 1 })
      }, { ino: 1 }), { timeout: 3600 })
      break
    case 'answer-slow':
      for (const answer of s.pending.splice(0)) answer()
      break
    case 'unmount':
      s.session.unmount()
      sessions.delete(m.tag)
      process.send({ op: 'unmounted', tag: m.tag })
      break
    case 'unmount-then-answer':
      s.session.unmount()
      sessions.delete(m.tag)
      for (const answer of s.pending.splice(0)) answer()
      process.send({ op: 'answered-after-unmount', tag: m.tag })
      break
    case 'unmount-all':
      for (const { session } of sessions.values()) session.unmount()
      process.exit(0)
  }
})
`

interface Caller { uid: number, gid: number, pid: number }
interface Event {
  op: string
  tag?: string
  node?: number
  newNode?: number
  name?: string
  fh?: number
  flags?: number
  mode?: number
  size?: number
  offset?: number
  toSet?: number
  atime?: number
  atimeNs?: number
  mtime?: number
  mtimeNs?: number
  invalidated?: boolean
  caller?: Caller
  length?: number
  fhOut?: number
  offsetOut?: number
  whence?: number
  plus?: boolean
}

const base = mkdtempSync(join(tmpdir(), 'stratafs-binding-'))
const mnt = join(base, 'mnt')
const cachedMnt = join(base, 'cached')
const goneMnt = join(base, 'gone')
const lateMnt = join(base, 'late')
const listedMnt = join(base, 'listed')
const mountpoints = [mnt, cachedMnt, goneMnt, lateMnt, listedMnt]
for (const m of mountpoints) mkdirSync(m)
// The caller test runs a command as nobody, who must be able to reach the mountpoint.
chmodSync(base, 0o755)
writeFileSync(join(base, 'server.mjs'), server)
const events: Event[] = []
let child: ChildProcess | undefined

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))
const mountLine = (m: string): string | undefined =>
  readFileSync('/proc/mounts', 'utf8').split('\n').find(line => line.split(' ')[1] === m)

t.teardown(async () => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    const running = child
    const exited = new Promise(resolve => running.once('exit', resolve))
    running.send({ cmd: 'unmount-all' })
    await Promise.race([exited, sleep(5000)])
    if (running.exitCode === null) running.kill('SIGKILL')
  }
  // Whatever the child did not get to: a dead server leaves its mounts behind.
  for (const m of mountpoints) spawnSync('fusermount', ['-uz', m], { stdio: 'ignore' })
  rmSync(base, { recursive: true, force: true })
})

const since = (from: number, op: string, tag = 'main'): Event[] => events.slice(from).filter(e => e.op === op && e.tag === tag)

/** Events of earlier requests may still be in flight: wait for them before taking a mark. */
async function mark (): Promise<number> {
  await settle()
  return events.length
}

let pong: (() => void) | undefined
/** IPC keeps order: once the pong is in, every event sent before it is too. */
async function settle (): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server does not answer')), 5000)
    pong = () => { clearTimeout(timer); resolve() }
    child?.send('ping')
  })
}

async function waitFor (from: number, op: string, tag: string): Promise<Event> {
  for (let i = 0; i < 500; i++) {
    const e = since(from, op, tag)[0]
    if (e !== undefined) return e
    await sleep(10)
  }
  throw new Error(`no ${op} from ${tag}`)
}

async function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms) })
  try {
    return await Promise.race([p, late])
  } finally {
    clearTimeout(timer)
  }
}

const libc = koffi.load('libc.so.6')
const lseek = libc.func('int64_t lseek(int fd, int64_t off, int whence)')
const utimensat = libc.func('int utimensat(int dirfd, const char *path, const int64_t *times, int flags)')
// truncate(2) itself: fs.truncateSync opens the file and truncates through the descriptor.
const truncate = libc.func('int truncate(const char *path, int64_t length)')
const AT_FDCWD = -100
const SEEK_END = 2
const SEEK_DATA = 3
const FALLOC_FL_KEEP_SIZE = 1
const fallocate = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)')
const copyFileRange = libc.func('int64_t copy_file_range(int fdIn, int64_t *offIn, int fdOut, int64_t *offOut, size_t len, unsigned int flags)')

function utimens (path: string, atime: [number, number], mtime: [number, number]): void {
  const r = utimensat(AT_FDCWD, path, new BigInt64Array([BigInt(atime[0]), BigInt(atime[1]), BigInt(mtime[0]), BigInt(mtime[1])]), 0) as number
  if (r !== 0) throw new Error(`utimensat ${path}: errno ${koffi.errno()}`)
}

t.before(async () => {
  const forked = fork(join(base, 'server.mjs'), [mnt, cachedMnt], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  child = forked
  forked.on('message', (m: Event) => {
    if (m.op === 'pong') pong?.()
    else events.push(m)
  })
  const died = new Promise<never>((_resolve, reject) => forked.once('exit', code => reject(new Error(`server exited with ${code}`))))
  died.catch(() => {})
  await Promise.race([died, Promise.all([waitFor(0, 'mounted', 'main'), waitFor(0, 'mounted', 'cached')])])
})

t.test('mount options reach the kernel', async t => {
  const fields = mountLine(mnt)?.split(' ') ?? []
  t.equal(fields[0], 'bindingtest-main', 'fsname')
  t.equal(fields[2], 'fuse.bindingtest', 'subtype')
  const opts = (fields[3] ?? '').split(',')
  t.ok(opts.includes('allow_other'), 'allow_other')
  t.ok(opts.includes('default_permissions'), 'default_permissions')
})

t.test('inode numbers above 2^32 and nanosecond times reach stat', async t => {
  const st = statSync(join(mnt, 'big'), { bigint: true })
  t.equal(st.ino, BigInt(BIG_INO))
  t.equal(st.mtimeNs, 1_700_000_000_123_456_789n)
  t.equal(st.atimeNs, 1_700_000_000_123_456_789n)
  t.equal(st.ctimeNs, 1_700_000_000_123_456_789n)
  t.equal(st.size, 5n)
  t.equal(st.nlink, 1n)
})

// struct dirent64 on Linux x86-64: d_ino, d_off, d_reclen, d_type, d_name[256].
const Dirent = koffi.struct('binding_test_dirent64', {
  ino: 'uint64_t', off: 'int64_t', reclen: 'uint16_t', type: 'uint8_t', name: koffi.array('char', 256)
})
const opendir = libc.func('void *opendir(const char *path)')
const readdir64 = libc.func('void *readdir64(void *dir)')
const rewinddir = libc.func('void rewinddir(void *dir)')
const closedir = libc.func('int closedir(void *dir)')

interface Dent { ino: number, type: number, name: string }
function readAll (dir: unknown): Dent[] {
  const out: Dent[] = []
  // Offsets that lead back to earlier entries would list forever: stop well past the end.
  while (out.length <= 2 * MANY) {
    const ent = readdir64(dir)
    if (ent === null) break
    const d = koffi.decode(ent, Dirent) as { ino: number | bigint, type: number, name: string }
    out.push({ ino: Number(d.ino), type: d.type, name: d.name })
  }
  return out
}

/** As fs.readdirSync, with the same bound as readAll. */
function listThroughNode (path: string): NodeDirent[] {
  const dir = opendirSync(path)
  const out: NodeDirent[] = []
  try {
    for (let ent = dir.readSync(); ent !== null && out.length <= 2 * MANY; ent = dir.readSync()) out.push(ent)
  } finally {
    dir.closeSync()
  }
  return out
}

t.test('readdir: d_type, 64-bit d_ino, UTF-8 names', async t => {
  const dir = opendir(join(mnt, 'types'))
  t.ok(dir, 'opendir')
  const seen = Object.fromEntries(readAll(dir).map(d => [d.name, [d.ino, d.type]]))
  closedir(dir)
  const DT_FIFO = 1
  const DT_DIR = 4
  const DT_REG = 8
  const DT_LNK = 10
  t.same(seen.dir, [7, DT_DIR], 'a directory')
  t.same(seen.fifo, [FIFO_INO, DT_FIFO], 'a FIFO with an inode number above 2^32')
  t.same(seen.file, [11, DT_REG], 'a file')
  t.same(seen['ünï-名'], [UTF8_INO, DT_LNK], 'a UTF-8 name, a symlink')
  const entries = listThroughNode(join(mnt, 'types'))
  t.ok(entries.find(e => e.name === 'fifo')?.isFIFO(), 'node sees the FIFO too')
})

t.test('a large directory lists completely over several requests, and again after a rewind', async t => {
  const start = await mark()
  const dir = opendir(join(mnt, 'many'))
  t.ok(dir, 'opendir')
  const first = readAll(dir)
  rewinddir(dir)
  const second = readAll(dir)
  closedir(dir)
  const expected = Array.from({ length: MANY }, (_, n) => 'f' + String(n).padStart(4, '0'))
  for (const [what, listing] of [['first', first], ['after rewind', second]] as const) {
    const names = listing.map(d => d.name)
    t.equal(new Set(names).size, names.length, `${what}: no duplicates`)
    t.same([...names].sort(), expected, `${what}: every name`)
    t.ok(listing.every(d => d.ino === MANY_INO + Number(d.name.slice(1))), `${what}: inode numbers`)
  }
  await settle()
  const requests = since(start, 'readdir')
  const fromStart = requests.filter(e => e.offset === 0)
  t.equal(fromStart.length, 2, 'the rewind starts again at offset 0')
  const rewound = requests.indexOf(fromStart[1]!)
  for (const pass of [requests.slice(0, rewound), requests.slice(rewound)]) {
    // Each request asks for at most 32 KiB (glibc's buffer) and the listing is ~94 KiB.
    t.ok(pass.length >= 3, `several requests per listing (${pass.length})`)
    const offsets = pass.map(e => e.offset ?? -1)
    t.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!), 'each request continues where the last ended')
  }
  t.equal(listThroughNode(join(mnt, 'many')).length, MANY, 'node lists it the same')
})

t.test('readdirplus: a listing brings every entry\'s attributes, so stat asks nothing more', async t => {
  let from = await mark()
  child?.send({ cmd: 'mount-listed', tag: 'listed', mnt: listedMnt })
  await waitFor(from, 'mounted', 'listed')
  t.teardown(() => { spawnSync('fusermount', ['-uz', listedMnt], { stdio: 'ignore' }) })
  from = await mark()
  t.same(readdirSync(listedMnt).sort(), ['a', 'd', 'l'])
  const a = statSync(join(listedMnt, 'a'), { bigint: true })
  const d = lstatSync(join(listedMnt, 'd'))
  const l = lstatSync(join(listedMnt, 'l'))
  await settle()
  t.ok(since(from, 'readdir', 'listed').some(e => e.plus === true), 'the kernel asked for a READDIRPLUS')
  t.same(since(from, 'lookup', 'listed').map(e => e.name), [], 'no lookup of a listed name')
  t.equal(a.ino, BigInt(BIG_INO + 1), '64-bit inode number')
  t.equal(a.size, 2n, 'size')
  t.equal(a.mtimeNs, 1_600_000_000_000_000_007n, 'mtime to the nanosecond')
  t.ok(d.isDirectory() && d.ino === 31, 'a directory')
  t.ok(l.isSymbolicLink() && l.ino === 32, 'a symlink')
})

t.test('statfs carries 64-bit counts', async t => {
  const st = statfsSync(mnt, { bigint: true })
  t.equal(st.blocks, 2n ** 40n)
  t.equal(st.bfree, 2n ** 39n + 1n)
  t.equal(st.bavail, 2n ** 39n)
  t.equal(st.files, 2n ** 35n)
  t.equal(st.ffree, 2n ** 34n + 1n)
  t.equal(st.bsize, 4096n)
})

t.test('setattr: times in ns, UTIME_OMIT and UTIME_NOW, chmod, 64-bit truncate', async t => {
  const f = join(mnt, 'times')
  let start = await mark()
  utimens(f, [1_500_000_000, 111_111_111], [1_600_000_000, 987_654_321])
  await settle()
  let [s] = since(start, 'setattr')
  t.equal(s?.toSet, SET.atime | SET.mtime, 'both times set')
  t.same([s?.atime, s?.atimeNs], [1_500_000_000, 111_111_111])
  t.same([s?.mtime, s?.mtimeNs], [1_600_000_000, 987_654_321])
  let st = statSync(f, { bigint: true })
  t.equal(st.atimeNs, 1_500_000_000_111_111_111n)
  t.equal(st.mtimeNs, 1_600_000_000_987_654_321n)

  start = await mark()
  utimens(f, [0, UTIME_OMIT], [1_650_000_000, 5])
  await settle()
  ;[s] = since(start, 'setattr')
  t.equal(s?.toSet, SET.mtime, 'UTIME_OMIT: the atime bit is not set')
  t.same([s?.mtime, s?.mtimeNs], [1_650_000_000, 5])
  t.equal(statSync(f, { bigint: true }).atimeNs, 1_500_000_000_111_111_111n, 'atime kept')

  start = await mark()
  utimens(f, [0, UTIME_NOW], [0, UTIME_OMIT])
  await settle()
  ;[s] = since(start, 'setattr')
  t.equal(s?.toSet, SET.atime | SET.atimeNow, 'UTIME_NOW is its own bit')

  start = await mark()
  execFileSync('touch', ['-m', '-d', '2001-02-03T04:05:06.123456789Z', f])
  await settle()
  ;[s] = since(start, 'setattr')
  t.equal(s?.toSet, SET.mtime, 'touch -m: mtime only')
  st = statSync(f, { bigint: true })
  t.equal(st.mtimeNs, 981_173_106_123_456_789n, 'touch -d sets ns')

  start = await mark()
  chmodSync(f, 0o600)
  await settle()
  ;[s] = since(start, 'setattr')
  t.equal(s?.toSet, SET.mode, 'chmod: mode only')
  t.equal((s?.mode ?? 0) & 0o7777, 0o600)
  t.equal(statSync(f).mode, 0o100600)

  start = await mark()
  t.equal(truncate(f, 4 * GiB + 7), 0, 'truncate(2)')
  await settle()
  ;[s] = since(start, 'setattr')
  t.ok(((s?.toSet ?? 0) & SET.size) !== 0, 'truncate sets the size')
  t.equal(s?.size, 4 * GiB + 7, 'a size above 2^32')
  t.equal(s?.fh, -1, 'truncate by path carries no handle')
  t.equal(statSync(f).size, 4 * GiB + 7)
  t.equal(truncate(f, 1), 0)
})

t.test('getattr gets the file handle where the kernel sends one', async t => {
  let start = await mark()
  const fd = openSync(join(mnt, 'big'), 'r')
  t.teardown(() => closeSync(fd))
  await settle()
  const fh = since(start, 'open').at(-1)?.fh
  t.ok(fh !== undefined && fh >= 10, 'open answered a handle')
  // fstat(2) reaches getattr without the file; lseek(SEEK_END) refreshes the size through it.
  start = await mark()
  t.equal(Number(lseek(fd, 0, SEEK_END)), 5, 'lseek(SEEK_END) asks for the size')
  await settle()
  const g = since(start, 'getattr').filter(e => e.name === 'big')
  t.ok(g.length > 0, 'getattr was called')
  t.ok(g.every(e => e.fh === fh), 'with the handle open returned')
  // Without a file the handle is -1, so a handler can tell the two apart.
  start = await mark()
  statSync(join(mnt, 'big'))
  await settle()
  t.same(since(start, 'getattr').filter(e => e.name === 'big').map(e => e.fh), [-1], 'stat by path: no handle')
})

t.test('getxattr and listxattr: size probe, ERANGE, a missing name', async t => {
  const lget = libc.func('long lgetxattr(const char *path, const char *name, void *value, size_t size)')
  const llist = libc.func('long llistxattr(const char *path, void *list, size_t size)')
  const f = join(mnt, 'big')
  t.equal(Number(lget(f, 'user.ten', null, 0)), 10, 'size 0 answers the length')
  t.equal(Number(lget(f, 'user.ten', Buffer.alloc(4), 4)), -1)
  t.equal(koffi.errno(), 34, 'a short buffer is ERANGE')
  const full = Buffer.alloc(64)
  t.equal(Number(lget(f, 'user.ten', full, 64)), 10)
  t.equal(full.subarray(0, 10).toString(), '0123456789')
  t.equal(Number(llist(f, null, 0)), 'user.ten\0'.length, 'list size is exact')
  t.equal(Number(llist(f, Buffer.alloc(3), 3)), -1)
  t.equal(koffi.errno(), 34, 'a short list buffer is ERANGE')
  t.equal(Number(lget(f, 'user.none', null, 0)), -1)
  t.equal(koffi.errno(), 61, 'a missing attribute is ENODATA')
  execFileSync('setfattr', ['-n', 'user.new', '-v', 'fresh', f])
  const dump = execFileSync('getfattr', ['-d', f], { encoding: 'utf8' })
  t.match(dump, /user\.ten="0123456789"/)
  t.match(dump, /user\.new="fresh"/)
  t.equal(spawnSync('getfattr', ['-n', 'user.none', f]).status, 1, 'getfattr of a missing attribute fails')
})

t.test('create gets the open flags and the mode', async t => {
  const start = await mark()
  const fd = openSync(join(mnt, 'created'), constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_EXCL, 0o640)
  writeSync(fd, 'abc')
  closeSync(fd)
  await settle()
  const [c] = since(start, 'create')
  t.ok(c, 'create reached JS')
  t.equal((c?.flags ?? 0) & 3, constants.O_WRONLY, 'access mode')
  t.ok(((c?.flags ?? 0) & constants.O_APPEND) !== 0, 'O_APPEND visible')
  t.equal(c?.mode, 0o100640, 'mode')
  t.equal(since(start, 'write')[0]?.fh, c?.fh, 'the write uses the handle create returned')
  t.equal(readFileSync(join(mnt, 'created'), 'utf8'), 'abc')
})

t.test('the caller uid/gid/pid is visible', async t => {
  const start = await mark()
  const r = spawnSync('runuser', ['-u', 'nobody', '--', 'stat', '-c', '%i', join(mnt, 'big')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout.trim(), String(BIG_INO))
  await settle()
  const seen = [...since(start, 'lookup'), ...since(start, 'getattr')].filter(e => e.name === 'big')
  t.ok(seen.length > 0, 'requests for big')
  t.same(seen.map(e => e.caller?.uid), seen.map(() => 65534), 'uid')
  t.same(seen.map(e => e.caller?.gid), seen.map(() => 65534), 'gid')
  t.ok(seen.every(e => (e.caller?.pid ?? 0) > 0 && e.caller?.pid !== process.pid), 'the pid of the caller')
  const mine = await mark()
  statSync(join(mnt, 'big'))
  await settle()
  const own = since(mine, 'getattr')[0]?.caller
  t.same([own?.uid, own?.gid, own?.pid], [0, 0, process.pid], 'root again, and our own pid, for our own request')
})

t.test('64-bit offsets for read and write; ftruncate carries the handle', async t => {
  const start = await mark()
  const fd = openSync(join(mnt, 'sparse'), 'r+')
  t.teardown(() => closeSync(fd))
  const buf = Buffer.alloc(4)
  t.equal(readSync(fd, buf, 0, 4, 5 * GiB + 4096), 4)
  t.same([...buf], [5, 5, 5, 5], 'read at 5 GiB')
  writeSync(fd, Buffer.from('x'), 0, 1, 5 * GiB + 3)
  ftruncateSync(fd, 4 * GiB + 7)
  await settle()
  const fh = since(start, 'open').at(-1)?.fh
  t.ok(since(start, 'read').some(e => e.offset === 5 * GiB + 4096 && e.fh === fh), 'read position above 2^32')
  t.same(since(start, 'write').map(e => [e.offset, e.size]), [[5 * GiB + 3, 1]], 'write position above 2^32')
  const [tr] = since(start, 'setattr')
  t.equal(tr?.size, 4 * GiB + 7, 'ftruncate size')
  t.equal(tr?.fh, fh, 'ftruncate carries the handle')
  t.equal(fstatSync(fd).size, 4 * GiB + 7)
})

t.test('fallocate, SEEK_DATA and copy_file_range carry their 64-bit arguments and answers', async t => {
  const start = await mark()
  const fd = openSync(join(mnt, 'sparse'), 'r+')
  t.teardown(() => closeSync(fd))
  const out = openSync(join(mnt, 'times'), 'r+')
  t.teardown(() => closeSync(out))
  // The kernel copies nothing from past the end it knows: an earlier test shortened the file.
  ftruncateSync(fd, 6 * GiB)
  t.equal(fallocate(fd, FALLOC_FL_KEEP_SIZE, 5 * GiB, 3 * GiB), 0, 'fallocate answered')
  t.equal(Number(lseek(fd, 5 * GiB + 1, SEEK_DATA)), 5 * GiB + 8, 'SEEK_DATA gets the answer\'s offset')
  const copied = copyFileRange(fd, new BigInt64Array([BigInt(5 * GiB)]), out, new BigInt64Array([BigInt(4 * GiB + 1)]), 3000, 0)
  t.equal(Number(copied), 1500, 'copy_file_range gets the answer\'s count')
  await settle()
  const [fh, fhOut] = since(start, 'open').map(e => e.fh)
  t.same(since(start, 'fallocate').map(e => [e.mode, e.offset, e.length, e.fh]), [[FALLOC_FL_KEEP_SIZE, 5 * GiB, 3 * GiB, fh]])
  t.same(since(start, 'lseek').map(e => [e.offset, e.whence, e.fh]), [[5 * GiB + 1, SEEK_DATA, fh]])
  t.same(since(start, 'copyFileRange').map(e => [e.fh, e.offset, e.fhOut, e.offsetOut, e.length]), [[fh, 5 * GiB, fhOut, 4 * GiB + 1, 3000]])
})

t.test('a late answer holds no other request back', async t => {
  const from = await mark()
  const reading = readFile(join(mnt, 'slow'), 'utf8')
  let done = false
  void reading.then(() => { done = true }, () => { done = true })
  await waitFor(from, 'read', 'main')
  for (let i = 0; i < 20; i++) t.equal((await within(stat(join(mnt, 'big')), 5000, 'stat')).size, 5)
  await settle()
  t.equal(done, false, 'the read is still waiting')
  t.ok(since(from, 'getattr').filter(e => e.name === 'big').length >= 20, 'the stats were answered meanwhile')
  child?.send({ cmd: 'answer-slow', tag: 'main' })
  t.equal(await within(reading, 5000, 'the slow read'), 'late answer')
})

t.test('invalidateAttr: a link shows on the old name at once; attributes are otherwise cached', async t => {
  const asked = async (name: string, stats: number): Promise<number> => {
    const from = await mark()
    for (let i = 0; i < stats; i++) statSync(join(cachedMnt, name))
    await settle()
    return [...since(from, 'lookup', 'cached'), ...since(from, 'getattr', 'cached')].filter(e => e.name === name).length
  }
  t.equal(await asked('plain', 5), 1, 'asked once, at lookup')
  t.equal(await asked('plain', 5), 0, 'then cached')

  t.equal(statSync(join(cachedMnt, 'solo')).nlink, 1)
  t.equal(await asked('solo', 3), 0, 'cached while it has one name')
  const from = await mark()
  linkSync(join(cachedMnt, 'solo'), join(cachedMnt, 'second'))
  await settle()
  const [l] = since(from, 'link', 'cached')
  t.ok(l?.invalidated, 'the link handler invalidated the old node')
  t.not(l?.newNode, l?.node, 'the new name is a node of its own')
  t.equal(statSync(join(cachedMnt, 'second')).nlink, 2, 'the new name is fresh')
  t.equal(statSync(join(cachedMnt, 'solo')).nlink, 2, 'the old name is not stale')
  t.equal(await asked('solo', 3), 0, 'and cached again after the one getattr')

  // The control: the same link without the invalidation leaves the old name's count stale.
  t.equal(statSync(join(cachedMnt, 'other')).nlink, 1)
  linkSync(join(cachedMnt, 'other'), join(cachedMnt, 'stale-other'))
  t.equal(statSync(join(cachedMnt, 'stale-other')).nlink, 2)
  t.equal(statSync(join(cachedMnt, 'other')).nlink, 1, 'without it, the kernel keeps nlink 1')
})

t.test('the exit handler runs when someone else unmounts; unmount() afterwards is harmless', async t => {
  let from = await mark()
  child?.send({ cmd: 'mount', tag: 'gone', mnt: goneMnt })
  await waitFor(from, 'mounted', 'gone')
  t.equal(statSync(join(goneMnt, 'slow')).size, 11, 'the mount serves')
  from = await mark()
  const r = spawnSync('fusermount', ['-u', goneMnt], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  await waitFor(from, 'exit', 'gone')
  t.pass('exit reported')
  child?.send({ cmd: 'unmount', tag: 'gone' })
  await waitFor(from, 'unmounted', 'gone')
  await settle()
  t.equal(child?.exitCode, null, 'the server lives on')
  t.equal(mountLine(goneMnt), undefined, 'nothing left mounted')
  t.equal(statSync(join(mnt, 'big')).size, 5, 'the other mounts still serve')
})

t.test('a reply after unmount is dropped', async t => {
  let from = await mark()
  child?.send({ cmd: 'mount', tag: 'late', mnt: lateMnt })
  await waitFor(from, 'mounted', 'late')
  from = await mark()
  const reading = readFile(join(lateMnt, 'slow'), 'utf8')
  const outcome = reading.then(() => 'answered', (err: NodeJS.ErrnoException) => err.code)
  await waitFor(from, 'read', 'late')
  child?.send({ cmd: 'unmount-then-answer', tag: 'late' })
  await waitFor(from, 'answered-after-unmount', 'late')
  const code = await within(outcome, 5000, 'the read the unmount cut off')
  t.ok(code === 'ENOTCONN' || code === 'ECONNABORTED', `the pending read fails, it does not hang (${code})`)
  await settle()
  t.equal(child?.exitCode, null, 'the server lives on')
  t.equal(mountLine(lateMnt), undefined, 'nothing left mounted')
  t.equal(statSync(join(mnt, 'big')).size, 5, 'the other mounts still serve')
})
