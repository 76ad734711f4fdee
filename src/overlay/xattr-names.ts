import { ESCAPED_XATTR_PREFIX, OVERLAY_XATTR_PREFIX, isPrivateXattr } from '../layers/whiteout.js'

/**
 * The name a merged view's xattr has in the layers: a user's `trusted.overlay.*` is stored as
 * `trusted.overlay.overlay.*` (see isPrivateXattr).
 */
export const realXattrName = (shown: string): string =>
  shown.startsWith(OVERLAY_XATTR_PREFIX) ? ESCAPED_XATTR_PREFIX + shown.slice(OVERLAY_XATTR_PREFIX.length) : shown

/** The name the merged view shows for an xattr in the layers; undefined for the overlay's own. */
export const shownXattrName = (real: string): string | undefined => {
  if (isPrivateXattr(real)) return undefined
  return real.startsWith(ESCAPED_XATTR_PREFIX) ? OVERLAY_XATTR_PREFIX + real.slice(ESCAPED_XATTR_PREFIX.length) : real
}
