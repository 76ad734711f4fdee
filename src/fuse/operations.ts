import os from 'node:os'
import type { Logger } from 'pino'
import { errorCode, StrataError } from '../errors.js'
import type { Timespec } from '../layers/entry.js'
import type { Attr, Caller } from '../overlay/attr.js'
import { changesData, DEFAULT_ACL, type Overlay } from '../overlay/overlay.js'
import type { FuseHandlers, Req } from './binding.js'
import { direntBuffer, direntPlusSlice, direntSlice } from './dir-listing.js'
import { toErrno } from './errno.js'
import type { IdMappings } from './id-mapping.js'
import { NodeTable, type Node } from './node-table.js'
import { CACHE_DIR, KEEP_CACHE, type FuseSession } from './session.js'

const { ENODATA, ERANGE, EINVAL } = os.constants.errno
const RENAME_NOREPLACE = 1
const RENAME_EXCHANGE = 2

/** Lower layers never change and every change to a name comes through us: the kernel may cache. */
const CACHE_SECONDS = 86400

/** setattr's `toSet` bits (fuse_lowlevel.h). */
const SET = { mode: 1, uid: 2, gid: 4, size: 8, atime: 16, mtime: 32, atimeNow: 128, mtimeNow: 256 } as const
const NO_ID = 0xffffffff
const UTIME_NOW = (1 << 30) - 1
const UTIME_OMIT = (1 << 30) - 2
const S_IFMT = 0o170000
const S_IFDIR = 0o040000

/**
 * The kernel asks for this before every write, to clear file capabilities (handle_killpriv would
 * hand that job, and clearing setuid bits, to us: see the session's init). Almost every file has
 * none.
 */
const CAPABILITY = 'security.capability'

/** Reads of up to this size (the kernel's usual largest) take a reused buffer... */
const READ_BUFFER = 1024 * 1024
/** ...of which this many are kept for the next reads: the kernel sends about as many at once. */
const KEPT_READ_BUFFERS = 16

const gone = (): StrataError => new StrataError('ESTALE', 'the kernel named a node that is gone')

interface Where {
  op: string
  path?: string
}

interface DirHandle {
  node: Node
  listing?: Buffer
}

/** What the mount learns from the session: the handshake done (or failed), the end from outside. */
export interface Lifecycle {
  initialised (err?: unknown): void
  ended (): void
}

/**
 * The low-level FUSE requests → overlay calls. The kernel names inodes; the node table turns them
 * into the paths the overlay works on, as libfuse's high-level API did for us before, including
 * keeping a file unlinked while open reachable (under a hidden name until the last close).
 *
 * Every request gets exactly one reply. Nothing a request does can throw out of its handler: every
 * error becomes an errno here and nowhere else. With `ids`, the overlay works in the ids stored in
 * the layers and the kernel sees them mapped (see IdMappings).
 */
export function operations (overlay: Overlay, session: () => FuseSession, log: Logger, lifecycle: Lifecycle, ids?: IdMappings): FuseHandlers {
  const nodes = new NodeTable()
  const dirs = new Map<number, DirHandle>()
  const readBuffers: Buffer[] = []
  /**
   * Inodes known to have no file capability. Capabilities change only through setxattr and
   * removexattr (the kernel clears them through removexattr too), which forget the inode here;
   * a new node forgets its number too, which may be a removed node's.
   */
  const noCapability = new Set<number>()
  /** Directories known to have no default ACL, kept as `noCapability` is. */
  const noDefaultAcl = new Set<number>()
  /** xattrs of the inode may have changed. */
  const forgetXattrs = (ino: number): void => {
    noCapability.delete(ino)
    noDefaultAcl.delete(ino)
  }

  /**
   * A new name's mode, as the kernel's posix_acl_create makes it: the umask applies unless the
   * directory has a default ACL (the upper's filesystem then applies that ACL itself).
   */
  const newMode = (parent: number, mode: number, umask: number): number => {
    if ((mode & ~umask) === mode) return mode
    const dir = nodeOf(parent)
    if (!noDefaultAcl.has(dir.ino)) {
      if (overlay.getxattr(pathOf(parent), DEFAULT_ACL) !== undefined) return mode
      noDefaultAcl.add(dir.ino)
    }
    return mode & ~umask
  }
  let nextDirHandle = 1

  /** Whom a new name belongs to, in stored ids. */
  const owner = (): Caller => ids === undefined ? session().caller() : ids.diskCaller(session().caller())
  /** Attributes as the kernel is to see them. */
  const shown = ids === undefined ? (attr: Attr): Attr => attr : (attr: Attr): Attr => ids.shownAttr(attr)

  /**
   * A file opened for writing is asked about its capability now, through the new descriptor, so
   * that its first write's GETXATTR needs no path walk. Not knowing is no error.
   */
  const learnCapability = (node: Node, fh: number): void => {
    if (noCapability.has(node.ino)) return
    try {
      if (overlay.fgetxattr(fh, CAPABILITY) === undefined) noCapability.add(node.ino)
    } catch {}
  }

  /** Open files whose reads and writes the kernel makes itself, through their node's backing file. */
  const passedThrough = new Map<number, Node>()

  /**
   * Whether the kernel reads and writes the file just opened as `fh` itself, with no request
   * (passthrough): its backing file's id, or 0 for requests and the page cache. The kernel takes
   * one backing file per inode, and fails (EIO) an open that is not passthrough while others
   * are, or passes another file through. So only a file whose data stays put is passed through
   * (the upper file; lower ones only on a read-only stack): a lower file open for reading could
   * otherwise not be copied up for writing. A node with files open through the page cache stays
   * with it until they are closed, and so does one the kernel refuses (no CAP_SYS_ADMIN, a file
   * on a stacked filesystem, a kernel before 6.9).
   */
  const passthrough = (node: Node, fh: number): number => {
    const { backing } = node
    if (backing !== undefined) {
      if (overlay.fileOf(fh) !== backing.file) throw new StrataError('EIO', 'a node open through passthrough opened another file')
      backing.opens++
      passedThrough.set(fh, node)
      return backing.id
    }
    const fd = overlay.passthroughFd(fh)
    if (fd === undefined || node.opens > 0) return 0
    const id = session().backingOpen(fd)
    if (id <= 0) return 0
    node.backing = { id, file: overlay.fileOf(fh), opens: 1 }
    passedThrough.set(fh, node)
    return id
  }

  /** The open file `fh` is closed; the last one through a backing file lets it go. */
  const releaseBacking = (fh: number): void => {
    const node = passedThrough.get(fh)
    if (node?.backing === undefined) return
    passedThrough.delete(fh)
    if (--node.backing.opens > 0) return
    session().backingClose(node.backing.id)
    node.backing = undefined
    // What the kernel kept of the file's pages before is older than what was written since.
    node.cacheValid = false
  }

  /** Attributes of files with several names are not cached: see `timeout`. */
  const timeout = (attr: Attr): number =>
    overlay.readOnly || attr.nlink <= 1 || (attr.mode & S_IFMT) === S_IFDIR ? CACHE_SECONDS : 0

  const fail = (req: Req, err: unknown, where: Where): void => {
    session().err(req, -toErrno(err, log, where.op, where.path ?? null))
  }

  /**
   * Runs `fn`, sync or async, and hands its value to `reply`; any throw becomes the errno reply.
   * `fn` notes the path it works on in `where`, for the log of an unexpected error.
   */
  const attempt = <T>(req: Req, where: Where, fn: () => T | Promise<T>, reply: (value: T) => void): void => {
    overlay.busy()
    const onError = (err: unknown): void => fail(req, err, where)
    const settle = (value: T): void => {
      try {
        reply(value)
      } catch (err) {
        onError(err)
      }
    }
    let result: T | Promise<T>
    try {
      result = fn()
    } catch (err) {
      onError(err)
      return
    }
    if (result instanceof Promise) result.then(settle, onError)
    else settle(result)
  }

  const nodeOf = (id: number): Node => {
    const node = nodes.get(id)
    if (node === undefined) throw gone()
    return node
  }

  const pathOf = (id: number): string => {
    const path = nodes.path(nodeOf(id))
    if (path === undefined) throw new StrataError('ENOENT', 'the name is gone')
    return path
  }

  const childPathOf = (parent: number, name: string): string => {
    const path = nodes.childPath(nodeOf(parent), name)
    if (path === undefined) throw new StrataError('ENOENT', 'the directory is gone')
    return path
  }

  /** A name the kernel learns of (a lookup, a new name, a READDIRPLUS record): it holds one more lookup of its node. */
  const lookedUp = (parent: Node, name: string, attr: Attr): Node => {
    const node = nodes.add(parent, name)
    node.lookups++
    nodes.saw(node, attr)
    return node
  }

  const entry = (req: Req, parent: number, name: string, attr: Attr): void => {
    const node = lookedUp(nodeOf(parent), name, attr)
    const t = timeout(attr)
    session().entry(req, node.id, shown(attr), t, t)
  }

  /** The open directory `fh`, its listing read again at offset 0 (a new listing or a rewind), as libfuse does. */
  const listed = (fh: number, offset: number, at: Where): DirHandle & { listing: Buffer } => {
    const dir = dirs.get(fh)
    if (dir === undefined) throw new StrataError('EBADF', `no open directory ${fh}`)
    if (offset === 0 || dir.listing === undefined) {
      const path = at.path = nodes.path(dir.node)
      if (path === undefined) throw new StrataError('ENOENT', 'the directory is gone')
      dir.listing = direntBuffer(overlay.readdir(path))
    }
    return dir as DirHandle & { listing: Buffer }
  }

  /** Requests that make a name answer with its entry. */
  const make = (req: Req, op: string, parent: number, name: string, fn: (path: string) => Promise<void>): void => {
    const at: Where = { op }
    attempt(req, at, async () => {
      const path = at.path = childPathOf(parent, name)
      await fn(path)
      const attr = overlay.getattr(path)
      forgetXattrs(attr.ino)
      return attr
    }, attr => entry(req, parent, name, attr))
  }

  /** Removing a name that is open: its file stays reachable under a hidden name until the last close. */
  const hide = async (node: Node, path: string): Promise<void> => {
    await overlay.hide(path, nodes.hiddenKey(node))
    nodes.hide(node)
  }

  const xattrReply = (req: Req, size: number, value: Buffer): void => {
    if (size === 0) session().xattrSize(req, value.length)
    else if (value.length > size) session().err(req, ERANGE)
    else session().buf(req, value)
  }

  return {
    init () {
      try {
        overlay.init()
        lifecycle.initialised()
      } catch (err) {
        lifecycle.initialised(err)
      }
    },
    exit () {
      lifecycle.ended()
    },
    lookup (req, parent, name) {
      const at: Where = { op: 'lookup' }
      overlay.busy()
      try {
        const path = at.path = childPathOf(parent, name)
        entry(req, parent, name, overlay.getattr(path))
      } catch (err) {
        if (errorCode(err) === 'ENOENT') session().noEntry(req, CACHE_SECONDS)
        else fail(req, err, at)
      }
    },
    forget (id, lookups) {
      nodes.forget(id, lookups)
    },
    getattr (req, id, fh) {
      const at: Where = { op: 'getattr' }
      attempt(req, at, () => {
        const node = nodeOf(id)
        const path = at.path = nodes.path(node)
        const attr = fh >= 0 ? overlay.fgetattr(path ?? null, fh) : overlay.getattr(pathOf(id))
        nodes.saw(node, attr)
        return attr
      }, attr => session().attr(req, shown(attr), timeout(attr)))
    },
    setattr (req, id, toSet, mode, uid, gid, size, atime, atimeNs, mtime, mtimeNs, fh) {
      const at: Where = { op: 'setattr' }
      attempt(req, at, async () => {
        const node = nodeOf(id)
        const path = at.path = nodes.path(node)
        const named = (): string => {
          if (path === undefined) throw new StrataError('ENOENT', 'the name is gone')
          return path
        }
        if ((toSet & SET.mode) !== 0) await overlay.chmod(named(), mode)
        if ((toSet & (SET.uid | SET.gid)) !== 0) {
          const diskUid = (toSet & SET.uid) === 0 ? NO_ID : ids?.diskUid(uid) ?? uid
          const diskGid = (toSet & SET.gid) === 0 ? NO_ID : ids?.diskGid(gid) ?? gid
          await overlay.chown(named(), diskUid, diskGid)
        }
        if ((toSet & SET.size) !== 0) {
          if (fh >= 0) overlay.ftruncate(fh, size)
          else await overlay.truncate(named(), size)
        }
        if ((toSet & (SET.atime | SET.mtime)) !== 0) {
          const time = (set: number, now: number, s: number, ns: number): Timespec =>
            (toSet & now) !== 0 ? [0, UTIME_NOW] : (toSet & set) !== 0 ? [s, ns] : [0, UTIME_OMIT]
          await overlay.utimens(named(), time(SET.atime, SET.atimeNow, atime, atimeNs), time(SET.mtime, SET.mtimeNow, mtime, mtimeNs))
        }
        const attr = fh >= 0 ? overlay.fgetattr(path ?? null, fh) : overlay.getattr(named())
        nodes.saw(node, attr)
        return attr
      }, attr => session().attr(req, shown(attr), timeout(attr)))
    },
    readlink (req, id) {
      attempt(req, { op: 'readlink' }, () => overlay.readlink(pathOf(id)), target => session().readlink(req, target))
    },
    mknod (req, parent, name, mode, rdev) {
      const who = owner()
      const umask = session().umask()
      make(req, 'mknod', parent, name, async path => await overlay.mknod(path, newMode(parent, mode, umask), rdev, who))
    },
    mkdir (req, parent, name, mode) {
      const who = owner()
      const umask = session().umask()
      make(req, 'mkdir', parent, name, async path => await overlay.mkdir(path, newMode(parent, mode, umask), who))
    },
    symlink (req, parent, name, target) {
      const who = owner()
      make(req, 'symlink', parent, name, async path => await overlay.symlink(target, path, who))
    },
    link (req, id, newParent, newName) {
      // The new name is a node of its own, so the kernel would keep the old name's link count:
      // it forgets those attributes first.
      make(req, 'link', newParent, newName, async path => {
        await overlay.link(pathOf(id), path)
        session().invalidateAttr(id)
      })
    },
    unlink (req, parent, name) {
      const at: Where = { op: 'unlink' }
      attempt(req, at, async () => {
        const path = at.path = childPathOf(parent, name)
        const node = nodes.child(nodeOf(parent), name)
        if (node !== undefined && node.opens > 0) {
          await hide(node, path)
          return
        }
        await overlay.unlink(path)
        if (node !== undefined) nodes.detach(node)
      }, () => session().ok(req))
    },
    rmdir (req, parent, name) {
      const at: Where = { op: 'rmdir' }
      attempt(req, at, async () => {
        const path = at.path = childPathOf(parent, name)
        await overlay.rmdir(path)
        const node = nodes.child(nodeOf(parent), name)
        if (node !== undefined) nodes.detach(node)
      }, () => session().ok(req))
    },
    rename (req, parent, name, newParent, newName, flags) {
      // RENAME_WHITEOUT is the kernel's own, refused by kernel overlayfs too.
      if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0) {
        session().err(req, EINVAL)
        return
      }
      const at: Where = { op: 'rename' }
      attempt(req, at, async () => {
        const path = at.path = childPathOf(parent, name)
        const dst = childPathOf(newParent, newName)
        const from = nodeOf(parent)
        const to = nodeOf(newParent)
        if (flags === RENAME_EXCHANGE) {
          await overlay.exchange(path, dst)
          nodes.exchange({ parent: from, name }, { parent: to, name: newName })
          return
        }
        const noReplace = flags === RENAME_NOREPLACE
        const replaced = noReplace ? undefined : nodes.child(to, newName)
        if (replaced !== undefined && replaced.opens > 0 && replaced !== nodes.child(from, name)) await hide(replaced, dst)
        await overlay.rename(path, dst, noReplace)
        const node = nodes.child(from, name)
        if (node !== undefined) nodes.move(node, to, newName)
      }, () => session().ok(req))
    },
    open (req, id, flags) {
      const at: Where = { op: 'open' }
      attempt(req, at, async () => {
        const path = at.path = pathOf(id)
        return await overlay.open(path, flags)
      }, fh => {
        const node = nodeOf(id)
        let backing: number
        try {
          backing = passthrough(node, fh)
        } catch (err) {
          overlay.release(fh)
          throw err
        }
        node.opens++
        if (changesData(flags)) learnCapability(node, fh)
        // As libfuse's kernel_cache (read-only stacks) and auto_cache (writable ones).
        const keep = overlay.readOnly || node.cacheValid
        node.cacheValid = true
        session().open(req, fh, backing === 0 && keep ? KEEP_CACHE : 0, backing)
      })
    },
    create (req, parent, name, mode, flags) {
      const who = owner()
      const umask = session().umask()
      const at: Where = { op: 'create' }
      attempt(req, at, async () => {
        const path = at.path = childPathOf(parent, name)
        const fh = await overlay.create(path, newMode(parent, mode, umask), flags, who)
        try {
          return { fh, attr: overlay.fgetattr(path, fh) }
        } catch (err) {
          overlay.release(fh)
          throw err
        }
      }, ({ fh, attr }) => {
        const node = nodes.add(nodeOf(parent), name)
        const backing = passthrough(node, fh)
        node.lookups++
        node.opens++
        nodes.saw(node, attr)
        node.cacheValid = true
        noCapability.add(attr.ino)
        session().create(req, node.id, shown(attr), timeout(attr), fh, backing === 0 && overlay.readOnly ? KEEP_CACHE : 0, backing)
      })
    },
    read (req, _id, size, offset, fh) {
      const buf = size <= READ_BUFFER ? readBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER) : Buffer.allocUnsafeSlow(size)
      attempt(req, { op: 'read' }, () => overlay.read(fh, buf, size, offset), n => {
        session().buf(req, buf, n)
        if (buf.length === READ_BUFFER && readBuffers.length < KEPT_READ_BUFFERS) readBuffers.push(buf)
      })
    },
    write (req, _id, data, offset, fh) {
      // Synchronous, as it must be: `data` is only lent for the duration of this call.
      attempt(req, { op: 'write' }, () => overlay.write(fh, data, data.length, offset), n => session().written(req, n))
    },
    release (req, id, fh) {
      const at: Where = { op: 'release' }
      attempt(req, at, async () => {
        releaseBacking(fh)
        overlay.release(fh)
        const node = nodes.get(id)
        if (node === undefined) return
        node.opens--
        const key = at.path = node.hidden
        if (node.opens > 0 || key === undefined) return
        node.hidden = undefined
        await overlay.unlink(key)
      }, () => session().ok(req))
    },
    fsync (req, _id, datasync, fh) {
      attempt(req, { op: 'fsync' }, async () => await overlay.fsync(fh, datasync !== 0), () => session().ok(req))
    },
    fallocate (req, _id, mode, offset, length, fh) {
      attempt(req, { op: 'fallocate' }, () => overlay.fallocate(fh, mode, offset, length), () => session().ok(req))
    },
    copyFileRange (req, fhIn, offIn, fhOut, offOut, len) {
      attempt(req, { op: 'copy_file_range' }, async () => await overlay.copyRange(fhIn, offIn, fhOut, offOut, len), n => session().written(req, n))
    },
    lseek (req, _id, offset, whence, fh) {
      attempt(req, { op: 'lseek' }, () => overlay.seek(fh, offset, whence), at => session().offset(req, at))
    },
    opendir (req, id) {
      attempt(req, { op: 'opendir' }, () => nodeOf(id), node => {
        const fh = nextDirHandle++
        dirs.set(fh, { node })
        // Every change to a name reaches the kernel as a request in its directory, which drops
        // the listing it keeps: it may keep one across opens.
        session().open(req, fh, KEEP_CACHE | CACHE_DIR)
      })
    },
    readdir (req, _id, size, offset, fh) {
      const at: Where = { op: 'readdir' }
      attempt(req, at, () => direntSlice(listed(fh, offset, at).listing, offset, size), slice => session().buf(req, slice))
    },
    /**
     * A listing with each entry's attributes, so that `ls -l`, `find`, `tar` and `du` need no
     * lookup per name afterwards.
     */
    readdirplus (req, _id, size, offset, fh) {
      const at: Where = { op: 'readdirplus' }
      attempt(req, at, () => {
        const dir = listed(fh, offset, at)
        const dirPath = nodes.path(dir.node)
        if (dirPath === undefined) throw new StrataError('ENOENT', 'the directory is gone')
        const prefix = dirPath === '/' ? '/' : dirPath + '/'
        return direntPlusSlice(dir.listing, offset, size, name => {
          if (name === '.' || name === '..') return undefined
          const path = prefix + name
          let attr: Attr
          try {
            attr = overlay.getattr(path)
          } catch {
            return undefined
          }
          return { node: lookedUp(dir.node, name, attr).id, attr: shown(attr), entryTimeout: CACHE_SECONDS, attrTimeout: timeout(attr) }
        })
      }, slice => session().buf(req, slice))
    },
    releasedir (req, _id, fh) {
      dirs.delete(fh)
      session().ok(req)
    },
    statfs (req) {
      attempt(req, { op: 'statfs' }, () => overlay.statfs(), st => session().statfs(req, st))
    },
    setxattr (req, id, name, value, flags) {
      const at: Where = { op: 'setxattr' }
      attempt(req, at, async () => {
        forgetXattrs(nodeOf(id).ino)
        const path = at.path = pathOf(id)
        await overlay.setxattr(path, name, value, flags)
      }, () => session().ok(req))
    },
    getxattr (req, id, name, size) {
      const at: Where = { op: 'getxattr' }
      attempt(req, at, () => {
        const node = nodeOf(id)
        if (name === CAPABILITY && noCapability.has(node.ino)) return undefined
        const path = at.path = pathOf(id)
        const value = overlay.getxattr(path, name)
        if (name === CAPABILITY && value === undefined) noCapability.add(node.ino)
        return value
      }, value => {
        if (value === undefined) session().err(req, ENODATA)
        else xattrReply(req, size, value)
      })
    },
    listxattr (req, id, size) {
      const who = session().caller()
      attempt(req, { op: 'listxattr' }, () => overlay.listxattr(pathOf(id), who),
        names => xattrReply(req, size, Buffer.from(names.map(n => n + '\0').join(''), 'utf8')))
    },
    removexattr (req, id, name) {
      const at: Where = { op: 'removexattr' }
      attempt(req, at, async () => {
        forgetXattrs(nodeOf(id).ino)
        const path = at.path = pathOf(id)
        await overlay.removexattr(path, name)
      }, () => session().ok(req))
    }
  }
}

