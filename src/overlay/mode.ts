import { S_IFDIR, S_IFLNK, S_IFMT } from '../layers/whiteout.js'

export { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR } from '../layers/whiteout.js'
export const S_ISGID = 0o2000

export const isDirMode = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR
export const isLinkMode = (mode: number): boolean => (mode & S_IFMT) === S_IFLNK
