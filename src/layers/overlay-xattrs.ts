import { lgetxattr, lsetxattr } from '../sys/index.js'

/**
 * The names an overlay gives its own xattrs (opaque, metacopy, redirect, origin), which describe
 * a particular overlay's structure: they never travel in a tar and are never shown through a
 * mount. Kernel overlayfs keeps them under `trusted.overlay.`, which only a process with
 * CAP_SYS_ADMIN in the initial user namespace may read or write; mounted with `userxattr`, as a
 * rootless container's overlay is, under `user.overlay.`. Stored layers always use `trusted`.
 */
export class OverlayXattrs {
  static readonly trusted = new OverlayXattrs('trusted.overlay.')
  static readonly user = new OverlayXattrs('user.overlay.')

  readonly opaque: string
  readonly metacopy: string
  /** Where the lower part of something a rename or a link moved is (see Upper.lowerPath, lowerDataOf). */
  readonly redirect: string
  /**
   * A user's own xattr under the overlay's prefix, stored escaped as kernel overlayfs stores it
   * since Linux 6.7 (an overlay's layers can then sit inside another overlay): content like any other.
   */
  readonly escaped: string

  private constructor (readonly prefix: string) {
    this.opaque = `${prefix}opaque`
    this.metacopy = `${prefix}metacopy`
    this.redirect = `${prefix}redirect`
    this.escaped = `${prefix}overlay.`
  }

  isPrivate (name: string): boolean {
    return name.startsWith(this.prefix) && !name.startsWith(this.escaped)
  }

  /** The name a merged view's xattr has in the layers. */
  real (shown: string): string {
    return shown.startsWith(this.prefix) ? this.escaped + shown.slice(this.prefix.length) : shown
  }

  /** The name the merged view shows for an xattr in the layers; undefined for the overlay's own. */
  shown (real: string): string | undefined {
    if (this.isPrivate(real)) return undefined
    return real.startsWith(this.escaped) ? this.prefix + real.slice(this.escaped.length) : real
  }

  isOpaque (dirPath: string): boolean {
    return isOpaqueValue(lgetxattr(dirPath, this.opaque))
  }

  markOpaque (dirPath: string): void {
    lsetxattr(dirPath, this.opaque, Buffer.from('y'))
  }
}

export function isOpaqueValue (value: Buffer | undefined): boolean {
  return value !== undefined && value.length === 1 && value[0] === 0x79
}
