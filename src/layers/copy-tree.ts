import {
  chmodSync, closeSync, constants, fchmodSync, fchownSync, lchownSync, linkSync, mkdirSync,
  openSync, symlinkSync
} from 'node:fs'
import { copyData, fsetxattr, futimens, lgetxattr, llistxattr, lsetxattr, lutimens, mknod } from '../sys/index.js'
import type { LayerEntry } from './entry.js'
import { scanLayer } from './scan.js'
import { OverlayXattrs } from './overlay-xattrs.js'
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, makeWhiteout } from './whiteout.js'

/**
 * Xattrs worth copying: everything but overlayfs' own, which describe a particular overlay
 * (redirects, origins, metacopy) rather than the content. Opaqueness is re-applied from the scan.
 */
function contentXattrs (path: string): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = []
  for (const name of llistxattr(path)) {
    if (OverlayXattrs.trusted.isPrivate(name)) continue
    const value = lgetxattr(path, name)
    if (value !== undefined) out.push([name, value])
  }
  return out
}

async function copyFile (from: string, to: string, e: LayerEntry): Promise<void> {
  const src = openSync(from, constants.O_RDONLY | constants.O_NOFOLLOW)
  try {
    const dst = openSync(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      await copyData(src, dst, e.attr.size)
      // chown clears setuid/setgid and file capabilities, so it goes first.
      fchownSync(dst, e.attr.uid, e.attr.gid)
      fchmodSync(dst, e.attr.mode & 0o7777)
      for (const [name, value] of contentXattrs(from)) fsetxattr(dst, name, value)
      futimens(dst, e.attr.atime, e.attr.mtime)
    } finally {
      closeSync(dst)
    }
  } finally {
    closeSync(src)
  }
}

/**
 * Copies a layer directory into the empty directory `dest`, keeping types, owners, modes, times
 * to the nanosecond, xattrs, device numbers, hard links and sparse holes, with whiteouts and
 * opaque markers of either form written in the kernel form. Symlinks are copied, never followed.
 * `onBytes` gets the running count of regular-file bytes copied.
 */
export async function copyLayerTree (src: string, dest: string, onBytes?: (copied: number) => void): Promise<void> {
  const srcRoot = src.replace(/\/+$/, '')
  const destRoot = dest.replace(/\/+$/, '')
  const dirs: LayerEntry[] = []
  const copiedInodes = new Map<number, string>()
  let copied = 0
  for (const e of scanLayer(src)) {
    const from = e.path === '/' ? srcRoot : srcRoot + e.path
    const to = e.path === '/' ? destRoot : destRoot + e.path
    const { attr } = e
    if (e.whiteout === true) {
      makeWhiteout(to, attr.mode)
      lchownSync(to, attr.uid, attr.gid)
      lutimens(to, attr.atime, attr.mtime)
      continue
    }
    const type = attr.mode & S_IFMT
    if (type === S_IFDIR) {
      if (e.path !== '/') mkdirSync(to, 0o700)
      for (const [name, value] of contentXattrs(from)) lsetxattr(to, name, value)
      if (e.opaque === true) OverlayXattrs.trusted.markOpaque(to)
      dirs.push(e)
      continue
    }
    if (type === S_IFREG) {
      const first = attr.nlink > 1 ? copiedInodes.get(attr.ino) : undefined
      if (first !== undefined) { linkSync(first, to); continue }
      await copyFile(from, to, e)
      if (attr.nlink > 1) copiedInodes.set(attr.ino, to)
      copied += attr.size
      onBytes?.(copied)
      continue
    }
    if (type === S_IFLNK) {
      symlinkSync(e.target ?? '', to)
    } else {
      mknod(to, type | 0o600, attr.rdev)
    }
    lchownSync(to, attr.uid, attr.gid)
    if (type !== S_IFLNK) chmodSync(to, attr.mode & 0o7777)
    for (const [name, value] of contentXattrs(from)) lsetxattr(to, name, value)
    lutimens(to, attr.atime, attr.mtime)
  }
  // Directories last: creating their children moved their mtimes, and a read-only mode would
  // have stopped the copy.
  for (const e of dirs) {
    const to = e.path === '/' ? destRoot : destRoot + e.path
    lchownSync(to, e.attr.uid, e.attr.gid)
    chmodSync(to, e.attr.mode & 0o7777)
    lutimens(to, e.attr.atime, e.attr.mtime)
  }
}
