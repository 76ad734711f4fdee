/** st_mode bits, spelled once: Node's fs.constants has them but not as compile-time numbers. */
export const S_IFMT = 0o170000
export const S_IFSOCK = 0o140000
export const S_IFLNK = 0o120000
export const S_IFREG = 0o100000
export const S_IFBLK = 0o060000
export const S_IFDIR = 0o040000
export const S_IFCHR = 0o020000
export const S_IFIFO = 0o010000
export const S_ISGID = 0o2000

export const isDirMode = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR
export const isRegMode = (mode: number): boolean => (mode & S_IFMT) === S_IFREG
export const isLinkMode = (mode: number): boolean => (mode & S_IFMT) === S_IFLNK

/** A kernel-format whiteout: a character device with device number 0/0. */
export const isWhiteout = (mode: number, rdev: number): boolean => (mode & S_IFMT) === S_IFCHR && rdev === 0
