import { StrataError } from '../errors.js'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { lgetxattr } from '../sys/index.js'
import { type IndexEntry, type LowerIndex, join } from './lower-index.js'
import { S_IFMT, S_IFREG } from './mode.js'
import { isRedirect, parentOf } from './upper.js'

/**
 * The lower file holding the data of the metacopy upper file `upperFile`, whose lower path is
 * `path` (Upper.lowerPath): the topmost lower regular file at the path its redirect xattr names,
 * else at `path`. A rename or a link gives a metadata-only copy a redirect (see
 * CopyUp.redirectBeforeMove), an absolute path or a name in the same directory, as kernel
 * overlayfs does with metacopy=on. Undefined when there is none: the upper and its layers do
 * not belong together.
 */
export function lowerDataOf (lower: LowerIndex, path: string, upperFile: string, xattrs: OverlayXattrs): { entry: IndexEntry, real: string } | undefined {
  const from = redirected(path, lgetxattr(upperFile, xattrs.redirect))
  const entry = from === undefined ? undefined : lower.lookup(from)
  if (from === undefined || entry === undefined || (entry.attr.mode & S_IFMT) !== S_IFREG) return undefined
  return { entry, real: lower.realPath(from, entry) }
}

/** lowerDataOf's file, which must exist. */
export function lowerDataPath (lower: LowerIndex, path: string, upperFile: string, xattrs: OverlayXattrs): string {
  const data = lowerDataOf(lower, path, upperFile, xattrs)
  if (data === undefined) throw new StrataError('EIO', `${path}: metacopy file with no lower regular file under it`)
  return data.real
}

/** The lower path a redirect xattr names for the file at lower path `path`; undefined if the kernel would not follow it. */
function redirected (path: string, value: Buffer | undefined): string | undefined {
  if (value === undefined) return path
  const redirect = value.toString()
  if (!isRedirect(redirect)) return undefined
  if (redirect.startsWith('/')) return redirect
  return join(parentOf(path), redirect)
}
