export { errnoName, type SysError } from './libc.js'
export { lstat, lstatIfExists, fstat, type Stat } from './stat.js'
export { listDir, type DirChild } from './dir.js'
export { mknod, makedev, major, minor } from './mknod.js'
export {
  lgetxattr, fgetxattr, lsetxattr, fsetxattr, llistxattr, flistxattr, lremovexattr, fremovexattr,
  XATTR_CREATE, XATTR_REPLACE
} from './xattr.js'
export { lutimens, futimens, UTIME_NOW, UTIME_OMIT } from './utimens.js'
export { renameat2, RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT } from './rename.js'
export { copyData, copyRange, type CopyMethod } from './copy.js'
export { preadCached, prefetch } from './read.js'
export { truncate } from './truncate.js'
export { fallocate, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from './fallocate.js'
export { lseek, SEEK_DATA, SEEK_HOLE } from './seek.js'
export { dup2 } from './dup2.js'
export { tryLockExclusive } from './flock.js'
