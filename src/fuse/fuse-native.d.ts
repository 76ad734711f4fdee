/**
 * Types for fuse-native 2.2.6 as patched by patches/fuse-native+2.2.6.patch (applied and rebuilt
 * by scripts/setup.sh). The patch is what makes these signatures true: nanosecond times, 53-bit
 * inode numbers, fgetattr with its fd, create with its flags, ERANGE for short xattr buffers,
 * `caller` per request, and `path === null` for files unlinked while open (hard_remove).
 *
 * Callbacks answer `cb(0, value)` on success or `cb(-errno)` on failure; read and write answer
 * with the byte count in the first slot; getxattr answers `cb(0, null)` for a missing attribute.
 */
declare module 'fuse-native' {
  type Timespec = [sec: number, nsec: number]

  namespace Fuse {
    interface Stat {
      mode: number
      uid: number
      gid: number
      size: number
      nlink: number
      /** Reaches the kernel as 64 bits (exact up to 2^53); needs the `use_ino` option to be kept. */
      ino: number
      rdev?: number
      dev?: number
      blksize?: number
      blocks?: number
      /** [sec, nsec]; a Date or milliseconds are still accepted, rounded to the millisecond. */
      atime: Timespec | Date | number
      mtime: Timespec | Date | number
      ctime: Timespec | Date | number
      /**
       * false: the kernel must not cache these attributes (getattr and fgetattr answers; also the
       * entry replies built from them). Default true: cached for the mount's attr_timeout.
       */
      cacheable?: boolean
    }

    interface Statfs {
      bsize: number
      frsize: number
      blocks: number
      bfree: number
      bavail: number
      files: number
      ffree: number
      favail: number
      fsid: number
      flag: number
      namemax: number
    }

    /** The process a request comes from, as fuse_get_context() saw it. */
    interface Caller {
      uid: number
      gid: number
      pid: number
    }

    type Done = (err: number) => void
    type Answer<T> = (err: number, value?: T) => void
    /** null when the file was unlinked while open; fd-based ops must then go by fd alone. */
    type OpenPath = string | null

    interface Operations {
      init?: (cb: Done) => void
      access?: (path: string, mode: number, cb: Done) => void
      statfs?: (path: string, cb: Answer<Partial<Statfs>>) => void
      getattr?: (path: string, cb: Answer<Partial<Stat>>) => void
      /** Reached for lseek(SEEK_END) and other kernel attribute refreshes on an open file. */
      fgetattr?: (path: OpenPath, fd: number, cb: Answer<Partial<Stat>>) => void
      flush?: (path: OpenPath, fd: number, cb: Done) => void
      fsync?: (path: OpenPath, fd: number, datasync: number, cb: Done) => void
      fsyncdir?: (path: OpenPath, fd: number, datasync: number, cb: Done) => void
      /** d_type comes from each stat's mode when `stats` has one entry per name. */
      readdir?: (path: string, cb: (err: number, names?: string[], stats?: Array<Partial<Stat>>) => void) => void
      truncate?: (path: string, size: number, cb: Done) => void
      ftruncate?: (path: OpenPath, fd: number, size: number, cb: Done) => void
      readlink?: (path: string, cb: Answer<string>) => void
      /** uid or gid 4294967295 means "leave unchanged". */
      chown?: (path: string, uid: number, gid: number, cb: Done) => void
      chmod?: (path: string, mode: number, cb: Done) => void
      mknod?: (path: string, mode: number, dev: number, cb: Done) => void
      setxattr?: (path: string, name: string, value: Buffer, position: number, flags: number, cb: Done) => void
      /** Answer the whole value; the binding handles size probes and answers ERANGE itself. */
      getxattr?: (path: string, name: string, position: number, cb: Answer<Buffer | null>) => void
      listxattr?: (path: string, cb: Answer<string[]>) => void
      removexattr?: (path: string, name: string, cb: Done) => void
      /** Answer a handle > 0; it comes back as `fd` to the per-handle ops. */
      open?: (path: string, flags: number, cb: Answer<number>) => void
      opendir?: (path: string, flags: number, cb: Answer<number>) => void
      read?: (path: OpenPath, fd: number, buffer: Buffer, length: number, position: number, cb: (bytesRead: number) => void) => void
      write?: (path: OpenPath, fd: number, buffer: Buffer, length: number, position: number, cb: (bytesWritten: number) => void) => void
      release?: (path: OpenPath, fd: number, cb: Done) => void
      releasedir?: (path: OpenPath, fd: number, cb: Done) => void
      create?: (path: string, mode: number, flags: number, cb: Answer<number>) => void
      /** nsec may be UTIME_NOW (2^30-1) or UTIME_OMIT (2^30-2), passed through untouched. */
      utimens?: (path: string, atime: Timespec, mtime: Timespec, cb: Done) => void
      unlink?: (path: string, cb: Done) => void
      rename?: (src: string, dest: string, cb: Done) => void
      link?: (src: string, dest: string, cb: Done) => void
      /** `target` is the link's content, `path` the new name. */
      symlink?: (target: string, path: string, cb: Done) => void
      mkdir?: (path: string, mode: number, cb: Done) => void
      rmdir?: (path: string, cb: Done) => void
    }

    interface Options {
      /** Extra libfuse options ride here: 'name,use_ino,big_writes,hard_remove,negative_timeout=N'. */
      fsname?: string
      subtype?: string
      debug?: boolean
      force?: boolean
      mkdir?: boolean
      allowOther?: boolean
      allowRoot?: boolean
      autoUnmount?: boolean
      defaultPermissions?: boolean
      kernelCache?: boolean
      autoCache?: boolean
      /** 0 is passed on (entry_timeout=0 disables caching). */
      entryTimeout?: number
      attrTimeout?: number
      acAttrTimeout?: number
      maxRead?: number
      blksize?: number
      umask?: number
      uid?: number
      gid?: number
      userId?: number
      noforget?: boolean
      remember?: number
      /** ms per request before the binding answers ETIMEDOUT itself; false for none. */
      timeout?: number | false | Record<string, number | false>
    }
  }

  class Fuse {
    constructor (mnt: string, ops: Fuse.Operations, opts?: Fuse.Options)
    readonly mnt: string
    /** The current request's caller: read it synchronously at handler entry; each read is a copy. */
    readonly caller: Fuse.Caller
    mount (cb: (err: Error | null) => void): void
    unmount (cb: (err: Error | null) => void): void
    errno (code: string): number
    static unmount (mnt: string, cb: (err: Error | null) => void): void
    static readonly ENOENT: number
    static readonly EEXIST: number
    static readonly EIO: number
    static readonly EPERM: number
    static readonly EACCES: number
    static readonly ERANGE: number
    static readonly ENODATA: number
    static readonly EOPNOTSUPP: number
    static readonly ENOSYS: number
  }

  export = Fuse
}
