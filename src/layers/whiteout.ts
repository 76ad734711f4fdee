import { mknod } from '../sys/index.js'

/**
 * The two ways a layer says "hide this name below": the kernel overlayfs form (a char device 0/0,
 * an opaque xattr) in which layers are stored, and the OCI form (`.wh.` marker files) found in
 * image tars and in directories people hand us. Both are accepted on read; on disk we write only
 * the kernel form so a stored layer can be a lowerdir of `mount -t overlay` as is.
 */
export const WHITEOUT_PREFIX = '.wh.'
export const OPAQUE_MARKER = '.wh..wh..opq'
/** OCI reserves every `.wh..wh.` name for meta-entries; the opaque marker is the only one defined. */
export const META_PREFIX = '.wh..wh.'

export const S_IFMT = 0o170000
export const S_IFSOCK = 0o140000
export const S_IFLNK = 0o120000
export const S_IFREG = 0o100000
export const S_IFBLK = 0o060000
export const S_IFDIR = 0o040000
export const S_IFCHR = 0o020000
export const S_IFIFO = 0o010000

export function isKernelWhiteout (mode: number, rdev: number): boolean {
  return (mode & S_IFMT) === S_IFCHR && rdev === 0
}

/**
 * The name a `.wh.<name>` marker hides, or undefined when `name` is no whiteout marker (the
 * opaque marker and other meta-entries are not whiteouts of a name).
 */
export function whiteoutTarget (name: string): string | undefined {
  if (!name.startsWith(WHITEOUT_PREFIX) || name.startsWith(META_PREFIX)) return undefined
  const hidden = name.slice(WHITEOUT_PREFIX.length)
  if (hidden === '' || hidden === '.' || hidden === '..') return undefined
  return hidden
}

export function makeWhiteout (path: string, perm = 0o644): void {
  mknod(path, S_IFCHR | (perm & 0o7777), 0)
}
