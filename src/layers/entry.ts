/**
 * What one layer directory holds, as the index builder and the store see it. Times are kept as
 * [seconds, nanoseconds] because make, git, tar and rsync compare nanosecond mtimes and a JS
 * number in milliseconds cannot carry them.
 */
export type Timespec = [sec: number, nsec: number]

export interface NodeAttr {
  /** Full st_mode, type bits included. */
  mode: number
  uid: number
  gid: number
  size: number
  rdev: number
  nlink: number
  /** The inode number inside its layer directory; groups hard links. */
  ino: number
  blocks: number
  atime: Timespec
  mtime: Timespec
  ctime: Timespec
}

/**
 * One entry of a layer as scanned from its directory. `path` is absolute inside the layer
 * ('/etc/passwd'); the layer root itself is '/'. Whiteouts of both forms (char 0/0 and OCI
 * `.wh.<name>` files) come out as `whiteout: true` at the hidden name's path; both opaque forms
 * (`trusted.overlay.opaque=y` and a `.wh..wh..opq` file) as `opaque: true` on the directory.
 * Marker files themselves never appear as entries.
 */
export interface LayerEntry {
  path: string
  whiteout?: true
  opaque?: true
  attr: NodeAttr
  /** Symlink target. */
  target?: string
}
