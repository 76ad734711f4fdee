import {
  chmodSync, closeSync, constants, fchmodSync, fchownSync, lchownSync, linkSync, mkdirSync,
  openSync, readdirSync, rmSync, symlinkSync, unlinkSync, write
} from 'node:fs'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import { createGunzip } from 'node:zlib'
import * as tar from 'tar-stream'
import { StrataError, errorCode } from '../errors.js'
import { fsetxattr, futimens, lsetxattr, lutimens, makedev, mknod } from '../sys/index.js'
import { HashingStream } from './digest.js'
import { sniffGzip } from './decompress.js'
import type { Timespec } from './entry.js'
import { paxXattrs, parsePaxId, parsePaxTime } from './pax.js'
import { entryComponents } from './tar-path.js'
import { OverlayXattrs, isOpaqueValue } from './overlay-xattrs.js'
import {
  META_PREFIX, OPAQUE_MARKER, S_IFBLK, S_IFCHR, S_IFIFO, WHITEOUT_PREFIX, makeWhiteout, whiteoutTarget
} from './whiteout.js'

/** Stored layers are kernel overlayfs lowers as they are. */
const OWN = OverlayXattrs.trusted

export interface ExtractOptions {
  /** Called as input bytes (compressed, when gzipped) are consumed. */
  onProgress?(bytes: number): void
}

export interface ExtractResult {
  /** sha256 of the uncompressed tar stream. */
  diffId: string
  /** Length of the uncompressed tar stream. */
  size: number
}

const BLOCK = 512
const writeAsync = promisify(write)

/** What the extractor itself created at a path. It alone writes under destDir, so this is the truth. */
type Kind = 'dir' | 'file' | 'symlink' | 'other'

interface Meta {
  mode: number
  uid: number
  gid: number
  atime: Timespec
  mtime: Timespec
  xattrs: Map<string, Buffer>
  opaque: boolean
}

interface TarHeader extends tar.Header {
  /** Offset of the entry's data in the uncompressed stream; tar-stream sets it, its types omit it. */
  byteOffset?: number
  pax?: Record<string, string> | null
}

function headerMeta (h: TarHeader): Meta {
  const pax = h.pax ?? undefined
  const mtime = parsePaxTime(pax?.mtime) ?? [Math.floor(h.mtime.getTime() / 1000), 0]
  const xattrs = paxXattrs(pax)
  let opaque = false
  for (const name of [...xattrs.keys()]) {
    if (!OWN.isPrivate(name)) continue
    // Only the opaque flag is layer content; redirect/origin/metacopy refer to a particular
    // overlay's other layers and must never be taken from an image.
    if (name === OWN.opaque) opaque = isOpaqueValue(xattrs.get(name))
    xattrs.delete(name)
  }
  return {
    mode: h.mode & 0o7777,
    uid: parsePaxId(pax?.uid) ?? h.uid,
    gid: parsePaxId(pax?.gid) ?? h.gid,
    atime: parsePaxTime(pax?.atime) ?? mtime,
    mtime,
    xattrs,
    opaque
  }
}

function implicitDirMeta (): Meta {
  const now = Date.now()
  const t: Timespec = [Math.floor(now / 1000), (now % 1000) * 1_000_000]
  return { mode: 0o755, uid: 0, gid: 0, atime: t, mtime: t, xattrs: new Map(), opaque: false }
}

const KIND_WORDS: Record<Kind, string> = {
  dir: 'a directory', file: 'a regular file', symlink: 'a symlink', other: 'a special file'
}

/**
 * Extracts one tar into an empty directory, refusing anything that could write elsewhere. The
 * extractor never follows a symlink: it creates every parent itself, tracks what it created, and
 * opens files with O_EXCL|O_NOFOLLOW, so an entry below a symlink or a hard link out of the
 * layer is caught before any syscall touches the path.
 */
class LayerExtractor {
  private readonly kinds = new Map<string, Kind>([['', 'dir']])
  private readonly dirs = new Map<string, Meta>()
  /** Where the last entry's data ends; the end-of-archive block must come after it. */
  dataEnd = 0

  constructor (private readonly root: string) {}

  private abs (rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`
  }

  /** Makes sure every component of `parents` is a directory the extractor made, creating the missing ones. */
  private ensureParents (parents: string[], name: string): string {
    let rel = ''
    for (const part of parents) {
      if (part.startsWith(WHITEOUT_PREFIX)) {
        throw new StrataError('BAD_TAR', `tar entry "${name}" has a whiteout marker "${part}" as a parent directory`)
      }
      rel = rel === '' ? part : `${rel}/${part}`
      const kind = this.kinds.get(rel)
      if (kind === 'dir') continue
      if (kind !== undefined) {
        throw new StrataError('UNSAFE_PATH', `tar entry "${name}" goes through "${rel}", which is ${KIND_WORDS[kind]}, not a directory`)
      }
      mkdirSync(this.abs(rel), 0o700)
      this.kinds.set(rel, 'dir')
      this.dirs.set(rel, implicitDirMeta())
    }
    return rel
  }

  /** Clears the way for a new node at `rel`: a later entry for the same name replaces the earlier one. */
  private clear (rel: string): void {
    const kind = this.kinds.get(rel)
    if (kind === undefined) return
    if (kind === 'dir') {
      rmSync(this.abs(rel), { recursive: true })
      const prefix = `${rel}/`
      for (const key of [...this.kinds.keys()]) if (key.startsWith(prefix)) this.kinds.delete(key)
      for (const key of [...this.dirs.keys()]) if (key.startsWith(prefix)) this.dirs.delete(key)
      this.dirs.delete(rel)
    } else {
      unlinkSync(this.abs(rel))
    }
    this.kinds.delete(rel)
  }

  private setXattrs (path: string, xattrs: Map<string, Buffer>): void {
    for (const [name, value] of xattrs) lsetxattr(path, name, value)
  }

  async entry (h: TarHeader, data: AsyncIterable<Buffer>): Promise<void> {
    const name = h.name
    if (h.byteOffset !== undefined) this.dataEnd = h.byteOffset + Math.ceil(h.size / BLOCK) * BLOCK
    const parts = entryComponents(name)
    const isFile = h.type === 'file' || h.type === 'contiguous-file'
    if (parts.length === 0) {
      if (h.type !== 'directory') throw new StrataError('BAD_TAR', `tar entry "${name}" names the layer root but is no directory`)
      this.directory('', h)
      return
    }
    const base = parts[parts.length - 1]
    const parentRel = this.ensureParents(parts.slice(0, -1), name)
    const rel = parentRel === '' ? base : `${parentRel}/${base}`

    if (base.startsWith(WHITEOUT_PREFIX)) {
      if (!isFile) throw new StrataError('BAD_TAR', `tar entry "${name}" is named like a whiteout marker but is no regular file`)
      if (base === OPAQUE_MARKER) {
        OWN.markOpaque(this.abs(parentRel))
        const meta = this.dirs.get(parentRel)
        if (meta !== undefined) meta.opaque = true
        return
      }
      const hidden = base.startsWith(META_PREFIX) ? undefined : whiteoutTarget(base)
      if (hidden === undefined) throw new StrataError('BAD_TAR', `tar entry "${name}" is not a valid whiteout marker`)
      const hiddenRel = parentRel === '' ? hidden : `${parentRel}/${hidden}`
      const meta = headerMeta(h)
      this.clear(hiddenRel)
      const path = this.abs(hiddenRel)
      makeWhiteout(path, meta.mode)
      lchownSync(path, meta.uid, meta.gid)
      chmodSync(path, meta.mode)
      lutimens(path, meta.atime, meta.mtime)
      this.kinds.set(hiddenRel, 'other')
      return
    }

    switch (h.type) {
      case 'directory': this.directory(rel, h); return
      case 'file':
      case 'contiguous-file': await this.file(rel, h, data); return
      case 'link': this.hardlink(rel, h); return
      case 'symlink': this.symlink(rel, h); return
      case 'character-device':
      case 'block-device':
      case 'fifo': this.special(rel, h); return
      default:
        throw new StrataError('BAD_TAR', `tar entry "${name}" has an unsupported type (${String(h.type)})`)
    }
  }

  private directory (rel: string, h: TarHeader): void {
    const meta = headerMeta(h)
    if (this.kinds.get(rel) !== 'dir') {
      this.clear(rel)
      mkdirSync(this.abs(rel), 0o700)
      this.kinds.set(rel, 'dir')
    }
    const previous = this.dirs.get(rel)
    if (previous?.opaque === true) meta.opaque = true
    this.dirs.set(rel, meta)
    this.setXattrs(this.abs(rel), meta.xattrs)
    if (meta.opaque) OWN.markOpaque(this.abs(rel))
  }

  private async file (rel: string, h: TarHeader, data: AsyncIterable<Buffer>): Promise<void> {
    const meta = headerMeta(h)
    this.clear(rel)
    const fd = openSync(this.abs(rel), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      for await (const buf of data) {
        let off = 0
        while (off < buf.length) off += (await writeAsync(fd, buf, off, buf.length - off)).bytesWritten
      }
      // chown clears setuid/setgid and file capabilities, so it goes first.
      fchownSync(fd, meta.uid, meta.gid)
      fchmodSync(fd, meta.mode)
      for (const [name, value] of meta.xattrs) fsetxattr(fd, name, value)
      futimens(fd, meta.atime, meta.mtime)
    } finally {
      closeSync(fd)
    }
    this.kinds.set(rel, 'file')
  }

  private hardlink (rel: string, h: TarHeader): void {
    const targetRel = entryComponents(h.linkname ?? '', `hard link target of "${h.name}"`).join('/')
    if (this.kinds.get(targetRel) !== 'file' || targetRel === rel) {
      throw new StrataError('UNSAFE_PATH', `tar hard link "${h.name}" points to "${h.linkname}", which is not a regular file extracted earlier in this layer`)
    }
    this.clear(rel)
    linkSync(this.abs(targetRel), this.abs(rel))
    this.kinds.set(rel, 'file')
  }

  private symlink (rel: string, h: TarHeader): void {
    if (h.linkname === null || h.linkname === undefined || h.linkname === '') {
      throw new StrataError('BAD_TAR', `tar symlink "${h.name}" has an empty target`)
    }
    const meta = headerMeta(h)
    this.clear(rel)
    const path = this.abs(rel)
    symlinkSync(h.linkname, path)
    lchownSync(path, meta.uid, meta.gid)
    this.setXattrs(path, meta.xattrs)
    lutimens(path, meta.atime, meta.mtime)
    this.kinds.set(rel, 'symlink')
  }

  private special (rel: string, h: TarHeader): void {
    const meta = headerMeta(h)
    const type = h.type === 'character-device' ? S_IFCHR : h.type === 'block-device' ? S_IFBLK : S_IFIFO
    const rdev = type === S_IFIFO ? 0 : makedev(h.devmajor, h.devminor)
    this.clear(rel)
    const path = this.abs(rel)
    mknod(path, type | 0o600, rdev)
    lchownSync(path, meta.uid, meta.gid)
    chmodSync(path, meta.mode)
    this.setXattrs(path, meta.xattrs)
    lutimens(path, meta.atime, meta.mtime)
    this.kinds.set(rel, 'other')
  }

  /**
   * Directory owners, modes and times go last: creating children changes a directory's mtime,
   * and a read-only mode would stop the children from being created at all.
   */
  finish (): void {
    for (const [rel, meta] of this.dirs) {
      const path = this.abs(rel)
      lchownSync(path, meta.uid, meta.gid)
      chmodSync(path, meta.mode)
      lutimens(path, meta.atime, meta.mtime)
    }
  }
}

function isZeroBlock (tail: Buffer): boolean {
  return tail.length === BLOCK && tail.every((b) => b === 0)
}

/** Turns what the streams throw into one sentence about the input. */
function tarError (err: unknown): unknown {
  if (err instanceof StrataError) return err
  const code = errorCode(err) ?? ''
  const message = err instanceof Error ? err.message : String(err)
  if (code.startsWith('Z_')) return new StrataError('BAD_TAR', `corrupt gzip stream (${message})`, { cause: err })
  if (/Unexpected end of data/.test(message)) return new StrataError('BAD_TAR', 'unexpected end of tar', { cause: err })
  if (/Invalid tar header|Invalid header|Header exceeds/.test(message)) {
    return new StrataError('BAD_TAR', `not a valid tar stream (${message})`, { cause: err })
  }
  if (/^E[A-Z]+$/.test(code)) return new StrataError('BAD_TAR', `cannot extract tar: ${message}`, { cause: err })
  return err
}

/**
 * Extracts a layer tar, gzipped or not, into `destDir` (existing and empty), converting OCI
 * whiteouts to the kernel form, and returns its DiffID. On failure destDir holds a partial
 * extraction the caller removes; nothing outside it is ever written.
 */
export async function extractLayerTar (input: Readable, destDir: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  if (readdirSync(destDir).length > 0) throw new StrataError('EEXIST', `extraction target ${destDir} is not empty`)
  const { gzip, stream } = await sniffGzip(input)
  let consumed = 0
  const counter = new Transform({
    transform (chunk: Buffer, _enc, cb) {
      consumed += chunk.length
      opts.onProgress?.(consumed)
      cb(null, chunk)
    }
  })
  const hasher = new HashingStream(BLOCK)
  const extractor = new LayerExtractor(destDir)
  const parser = tar.extract()
  parser.on('entry', (header, data, next) => {
    extractor.entry(header as TarHeader, data as AsyncIterable<Buffer>).then(
      () => { data.resume(); next() },
      (err: unknown) => { data.resume(); next(err instanceof Error ? err : new Error(String(err))) }
    )
  })
  const stages = gzip ? [stream, counter, createGunzip(), hasher] : [stream, counter, hasher]
  try {
    await pipeline([...stages, parser] as unknown as [Readable, NodeJS.WritableStream])
  } catch (err) {
    throw tarError(err)
  }
  if (hasher.bytes === 0) throw new StrataError('BAD_TAR', 'the input is empty, not a tar')
  if (hasher.bytes % BLOCK !== 0 || !isZeroBlock(hasher.tail()) || hasher.bytes < extractor.dataEnd + BLOCK) {
    throw new StrataError('BAD_TAR', 'unexpected end of tar (no end-of-archive block)')
  }
  extractor.finish()
  return { diffId: hasher.digest(), size: hasher.bytes }
}
