import { OVERLAY_XATTR_PREFIX } from '../layers/whiteout.js'

/**
 * The overlay's own xattrs (`trusted.overlay.*`: opaque, metacopy...) are its bookkeeping, never
 * part of a file's visible state. A user's `trusted.overlay.*` xattr is stored escaped, as
 * `trusted.overlay.overlay.*`, as kernel overlayfs does since Linux 6.7: an overlay whose layers
 * sit inside this one (nesting) keeps its markers, and they mean nothing here.
 */
const ESCAPED_PREFIX = `${OVERLAY_XATTR_PREFIX}overlay.`

export const isPrivateXattr = (real: string): boolean =>
  real.startsWith(OVERLAY_XATTR_PREFIX) && !real.startsWith(ESCAPED_PREFIX)

/** The name a merged view's xattr has in the layers. */
export const realXattrName = (shown: string): string =>
  shown.startsWith(OVERLAY_XATTR_PREFIX) ? ESCAPED_PREFIX + shown.slice(OVERLAY_XATTR_PREFIX.length) : shown

/** The name the merged view shows for an xattr in the layers; undefined for the overlay's own. */
export const shownXattrName = (real: string): string | undefined => {
  if (!real.startsWith(OVERLAY_XATTR_PREFIX)) return real
  return real.startsWith(ESCAPED_PREFIX) ? OVERLAY_XATTR_PREFIX + real.slice(ESCAPED_PREFIX.length) : undefined
}
