// A minimal fuse-native fs: one file, getattr answered synchronously. Mounted with attr_timeout=0
// so every stat from the loop is a getattr round trip.
// FUSE_NATIVE: another build of the binding to measure (a directory), default the installed one.
const Fuse = require(process.env.FUSE_NATIVE || 'fuse-native')
const mnt = process.argv[2]
const now = [1700000000, 0]
const dir = { mode: 0o40755, uid: 0, gid: 0, size: 4096, nlink: 2, ino: 1, atime: now, mtime: now, ctime: now }
const file = { mode: 0o100644, uid: 0, gid: 0, size: 5, nlink: 1, ino: 2, atime: now, mtime: now, ctime: now }
const ops = {
  getattr (path, cb) {
    if (path === '/') return cb(0, dir)
    if (path === '/f') return cb(0, file)
    cb(Fuse.ENOENT)
  },
  readdir (path, cb) { cb(0, ['f']) }
}
const fuse = new Fuse(mnt, ops, { fsname: 'rt,use_ino,entry_timeout=86400', attrTimeout: 0, timeout: false, force: true })
fuse.mount(err => {
  if (err) { console.error(err); process.exit(1) }
  process.send?.('mounted')
})
const stop = () => fuse.unmount(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
