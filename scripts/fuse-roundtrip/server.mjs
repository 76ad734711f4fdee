// A minimal FUSE fs on the project's session: one file, getattr answered synchronously with
// attr_timeout=0, so every stat from the loop is a getattr round trip.
import { FuseSession } from '../../dist/fuse/session.js'

const mnt = process.argv[2]
const time = [1700000000, 0]
const attr = (ino, mode, size) => ({ ino, mode, size, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096, blocks: 0, atime: time, mtime: time, ctime: time })
const dir = attr(1, 0o40755, 4096)
const file = attr(2, 0o100644, 5)
const ENOSYS = 38
let session
const handlers = {
  init () {},
  exit () { process.exit(0) },
  forget () {},
  lookup (req, parent, name) {
    if (parent === 1 && name === 'f') session.entry(req, 2, file, 86400, 0)
    else session.noEntry(req, 86400)
  },
  getattr (req, node) { session.attr(req, node === 1 ? dir : file, 0) }
}
for (const op of ['setattr', 'readlink', 'mknod', 'mkdir', 'unlink', 'rmdir', 'symlink', 'rename', 'link', 'open', 'read',
  'write', 'release', 'fsync', 'opendir', 'readdir', 'readdirplus', 'releasedir', 'statfs', 'setxattr', 'getxattr', 'listxattr',
  'removexattr', 'create', 'fallocate', 'copyFileRange', 'lseek']) handlers[op] = req => session.err(req, ENOSYS)
session = new FuseSession(mnt, ['fsname=rt', 'subtype=rt'], handlers)
const stop = () => { session.unmount(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
