import { StrataError } from '../errors.js'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { lgetxattr } from '../sys/index.js'
import type { IndexEntry, LowerIndex } from './lower-index.js'
import { S_IFMT, S_IFREG } from './mode.js'
import { parentOf } from './upper.js'

/**
 * The lower file holding the data of the metacopy upper file `upperFile`, shown at `path`: the
 * topmost lower regular file at the path its redirect xattr names, else at its own path. A
 * rename or a link gives a metadata-only copy a redirect (see CopyUp.redirectBeforeMove), an
 * absolute path or a name in the same directory, as kernel overlayfs does with metacopy=on.
 * Undefined when there is none: the upper and its layers do not belong together.
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

/** The path a redirect xattr names, as the kernel reads one (no empty, `.` or `..` names); undefined if invalid. */
function redirected (path: string, value: Buffer | undefined): string | undefined {
  if (value === undefined) return path
  const redirect = value.toString()
  const names = redirect.startsWith('/') ? redirect.slice(1).split('/') : [redirect]
  if (names.some(name => name === '' || name === '.' || name === '..' || name.includes('/'))) return undefined
  if (redirect.startsWith('/')) return redirect
  const parent = parentOf(path)
  return parent === '/' ? `/${redirect}` : `${parent}/${redirect}`
}
