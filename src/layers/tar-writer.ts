import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import * as tar from 'tar-stream'
import { StrataError } from '../errors.js'
import type { Logger } from '../log.js'
import { lgetxattr, llistxattr, major, minor } from '../sys/index.js'
import type { LayerEntry } from './entry.js'
import { LIBARCHIVE_XATTR, SCHILY_XATTR, formatPaxTime, isUtf8Clean } from './pax.js'
import { scanLayer } from './scan.js'
import { OverlayXattrs } from './overlay-xattrs.js'
import {
  OPAQUE_MARKER, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, WHITEOUT_PREFIX
} from './whiteout.js'

export interface LayerTarOptions {
  log?: Logger
  /**
   * Writes an entry for the layer root (`./`), so the layer carries the root's mode, owner, times
   * and xattrs: a commit must keep what the container's root showed. Off for imported
   * directories, whose DiffID covers their content only, as docker's layer tars do.
   */
  rootEntry?: boolean
  /**
   * Where the data of an overlayfs metacopy file (`trusted.overlay.metacopy`, metadata only) is,
   * given its path in the layer ('/a/b'): the lower file at the same path. Without it such a
   * file is refused rather than written empty.
   */
  metacopyData?: (path: string) => string
}

/** Larger ids do not fit the ustar header's 7 octal digits and go to PAX records. */
const MAX_USTAR_ID = 0o7777777
/** File entries need a body to be closed, even an empty one. */
const EMPTY = Buffer.alloc(0)

type Header = tar.Header & { pax: Record<string, string> }

function splitPath (path: string): { parent: string, base: string } {
  const i = path.lastIndexOf('/')
  return { parent: path.slice(1, i + 1), base: path.slice(i + 1) }
}

/**
 * Xattrs as PAX records, names sorted so the stream is deterministic. Text values use the
 * SCHILY form every tar reader knows; binary ones (file capabilities, ACLs) the LIBARCHIVE form,
 * base64, because a SCHILY value must survive a UTF-8 round trip through the reader.
 */
function xattrRecords (abs: string, names: string[], pax: Record<string, string>): void {
  for (const name of [...names].sort()) {
    if (OverlayXattrs.trusted.isPrivate(name)) continue
    const value = lgetxattr(abs, name)
    if (value === undefined) continue
    if (isUtf8Clean(value)) pax[SCHILY_XATTR + name] = value.toString('utf8')
    else pax[LIBARCHIVE_XATTR + encodeURIComponent(name)] = value.toString('base64')
  }
}

function baseHeader (name: string, e: LayerEntry): Header {
  const { attr } = e
  const pax: Record<string, string> = {}
  if (attr.mtime[1] !== 0) pax.mtime = formatPaxTime(attr.mtime)
  if (attr.uid > MAX_USTAR_ID) pax.uid = String(attr.uid)
  if (attr.gid > MAX_USTAR_ID) pax.gid = String(attr.gid)
  return {
    name,
    // Type bits included: tar-stream masks them off but takes a mode of 0 for "unset" and
    // writes 0644, which would turn a mode-0000 file (/etc/shadow on some distros) readable.
    mode: attr.mode,
    uid: Math.min(attr.uid, MAX_USTAR_ID),
    gid: Math.min(attr.gid, MAX_USTAR_ID),
    mtime: new Date(attr.mtime[0] * 1000),
    size: 0,
    type: 'file',
    linkname: '',
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    pax
  }
}

/** tar-stream writes a PAX header whenever `pax` is set, even empty; ours is set only when needed. */
function packHeader (header: Header): tar.Header {
  if (Object.keys(header.pax).length > 0) return header
  const { pax: _unused, ...plain } = header
  return plain
}

function addEntry (pack: tar.Pack, header: Header, body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null): void => { if (err) reject(err); else resolve() }
    if (body !== undefined) pack.entry(packHeader(header), body, cb)
    else pack.entry(packHeader(header), cb)
  })
}

/** The data source of a regular file: itself, or the lower file of a metacopy upper file. */
function fileDataPath (abs: string, xattrNames: string[], path: string, opts: LayerTarOptions): string {
  if (!xattrNames.includes(OverlayXattrs.trusted.metacopy)) return abs
  if (opts.metacopyData === undefined) {
    throw new StrataError('ENOTSUP', `"${path}" is an overlayfs metacopy file and its lower layers are unknown here`)
  }
  return opts.metacopyData(path)
}

async function writeFile (pack: tar.Pack, header: Header, path: string): Promise<void> {
  if (header.size === 0) return addEntry(pack, header, EMPTY)
  let settle: (err?: Error | null) => void = () => {}
  const packed = new Promise<void>((resolve, reject) => { settle = (err) => { if (err) reject(err); else resolve() } })
  const sink = pack.entry(packHeader(header), settle)
  // A file that shrank since it was scanned ends the read early and the sink fails the size check.
  await Promise.all([pipeline(createReadStream(path, { start: 0, end: header.size - 1 }), sink as unknown as NodeJS.WritableStream), packed])
}

async function produce (dir: string, pack: tar.Pack, opts: LayerTarOptions): Promise<void> {
  const root = dir.replace(/\/+$/, '')
  const firstPathOfInode = new Map<number, string>()
  for (const e of scanLayer(dir)) {
    const { parent, base } = splitPath(e.path)
    const abs = root + e.path
    if (e.whiteout === true) {
      await addEntry(pack, baseHeader(parent + WHITEOUT_PREFIX + base, e), EMPTY)
      continue
    }
    const type = e.attr.mode & S_IFMT
    const name = e.path === '/' ? '' : e.path.slice(1)
    const xattrNames = llistxattr(abs)
    if (type === S_IFDIR) {
      if (name !== '' || opts.rootEntry === true) {
        const h = baseHeader(name === '' ? './' : `${name}/`, e)
        h.type = 'directory'
        xattrRecords(abs, xattrNames, h.pax)
        await addEntry(pack, h)
      }
      if (e.opaque === true) {
        const marker = baseHeader(name === '' ? OPAQUE_MARKER : `${name}/${OPAQUE_MARKER}`, e)
        marker.mode = 0o644
        await addEntry(pack, marker, EMPTY)
      }
      continue
    }
    const h = baseHeader(name, e)
    if (type === S_IFREG) {
      const first = e.attr.nlink > 1 ? firstPathOfInode.get(e.attr.ino) : undefined
      if (first !== undefined) {
        h.type = 'link'
        h.linkname = first
        await addEntry(pack, h)
        continue
      }
    }
    xattrRecords(abs, xattrNames, h.pax)
    if (type === S_IFREG) {
      if (e.attr.nlink > 1) firstPathOfInode.set(e.attr.ino, name)
      h.size = e.attr.size
      await writeFile(pack, h, fileDataPath(abs, xattrNames, e.path, opts))
    } else if (type === S_IFLNK) {
      h.type = 'symlink'
      h.linkname = e.target ?? ''
      await addEntry(pack, h)
    } else if (type === S_IFCHR || type === S_IFBLK) {
      h.type = type === S_IFCHR ? 'character-device' : 'block-device'
      h.devmajor = major(e.attr.rdev)
      h.devminor = minor(e.attr.rdev)
      await addEntry(pack, h)
    } else if (type === S_IFIFO) {
      h.type = 'fifo'
      await addEntry(pack, h)
    } else {
      opts.log?.warn({ path: e.path }, 'socket left out of the layer tar: tar cannot carry sockets')
    }
  }
  pack.finalize()
}

/**
 * A layer directory as a deterministic OCI layer tar: names in scan order (sorted bytes), a
 * layer root entry only when asked, no user or group names, PAX records only where ustar falls short (long
 * names, nanosecond mtimes, large ids, xattrs). Kernel whiteouts become `.wh.<name>` files and
 * opaque directories get a `.wh..wh..opq` entry, so any OCI consumer reads it. Its sha256 is the
 * layer's DiffID; overlayfs-private xattrs never go in.
 */
export function layerTar (dir: string, opts: LayerTarOptions = {}): Readable {
  const pack = tar.pack()
  produce(dir, pack, opts).catch((err: unknown) => pack.destroy(err instanceof Error ? err : new Error(String(err))))
  return Readable.from(pack as AsyncIterable<Buffer>, { objectMode: false })
}
