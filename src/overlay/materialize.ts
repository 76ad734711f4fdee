import { StrataError } from '../errors.js'
import type { OverlayXattrs } from '../layers/overlay-xattrs.js'
import { lgetxattr } from '../sys/index.js'
import type { LowerIndex } from './lower-index.js'
import { S_IFMT, S_IFREG } from './mode.js'
import { parentOf } from './upper.js'

/**
 * The lower file holding the data of the metacopy upper file `upperFile`, shown at `path`: the
 * topmost lower regular file at the path its redirect xattr names, else at its own path. Kernel
 * overlayfs (metacopy=on) gives a metadata-only copy that a rename or a link moved a redirect,
 * an absolute path or a name in the same directory; stratafs gives its copies their data first.
 * Anything else there means the upper and its layers do not belong together.
 */
export function lowerDataPath (lower: LowerIndex, path: string, upperFile: string, xattrs: OverlayXattrs): string {
  const from = redirected(path, lgetxattr(upperFile, xattrs.redirect))
  const entry = from === undefined ? undefined : lower.lookup(from)
  if (from === undefined || entry === undefined || (entry.attr.mode & S_IFMT) !== S_IFREG) {
    throw new StrataError('EIO', `${path}: metacopy file with no lower regular file under it`)
  }
  return lower.realPath(from, entry)
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
