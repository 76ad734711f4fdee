import { createReadStream, createWriteStream } from 'node:fs'
import { lstat, mkdtemp, open, readlink, rm, stat } from 'node:fs/promises'
import { join, posix } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import * as tar from 'tar-stream'
import { StrataError, errorCode } from '../errors.js'

/** Manifests, indexes and configs are small; a bigger one is hostile or broken. */
const MAX_JSON = 16 << 20
const MAX_LINK_HOPS = 40
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b])

/** Throws for a path the reader must not touch (the daemon's own mounts); called before any fs call on it. */
export type PathGuard = (absPath: string) => void

/**
 * The files of an image archive (an OCI layout or a `docker save` output), whether it is a
 * directory or a tar, read by the names its manifests use. Nothing is ever written from here:
 * a name only selects something to read, and one that would leave the archive is refused.
 */
export interface ImageSource {
  readonly path: string
  /** Size of the regular file at `name`, undefined when there is none. */
  size (name: string): Promise<number | undefined>
  /** The whole file, for JSON documents (size-limited). */
  read (name: string, what: string): Promise<Buffer>
  /** The first `n` bytes (fewer if the file is shorter). */
  head (name: string, n: number): Promise<Buffer>
  stream (name: string): Readable
  close (): Promise<void>
}

/**
 * Normalizes a name found in a manifest to a path relative to the archive root, refusing
 * absolute names and `..`: they are the classic way out of an archive.
 */
export function archivePath (name: unknown, what: string): string {
  if (typeof name !== 'string' || name === '') throw new StrataError('BAD_IMAGE', `${what} is not a file name`)
  if (name.startsWith('/')) throw new StrataError('UNSAFE_PATH', `${what} "${name}" is an absolute path`)
  if (name.includes('\0')) throw new StrataError('UNSAFE_PATH', `${what} contains a NUL byte`)
  const parts = name.split('/').filter((p) => p !== '' && p !== '.')
  if (parts.includes('..')) throw new StrataError('UNSAFE_PATH', `${what} "${name}" has a ".." component`)
  if (parts.length === 0) throw new StrataError('BAD_IMAGE', `${what} "${name}" names the archive root`)
  return parts.join('/')
}

function missing (source: ImageSource, name: string, what: string): StrataError {
  return new StrataError('BAD_IMAGE', `${what} "${name}" is missing from ${source.path}`)
}

async function readLimited (source: ImageSource, name: string, what: string): Promise<Buffer> {
  const size = await source.size(name)
  if (size === undefined) throw missing(source, name, what)
  if (size > MAX_JSON) throw new StrataError('BAD_IMAGE', `${what} "${name}" is ${size} bytes, too big for a JSON document`)
  const chunks: Buffer[] = []
  for await (const chunk of source.stream(name)) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function readHead (stream: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let got = 0
  for await (const chunk of stream) {
    chunks.push(chunk as Buffer)
    got += (chunk as Buffer).length
    if (got >= n) break
  }
  stream.destroy()
  return Buffer.concat(chunks).subarray(0, n)
}

/** An unpacked archive: `skopeo copy … oci:DIR`, or a `docker save` tar someone extracted. */
class DirectorySource implements ImageSource {
  private readonly resolved = new Map<string, string>()

  constructor (readonly path: string, private readonly guard: PathGuard) {}

  /**
   * Follows symlinks one component at a time, inside the archive only: `docker save` links a
   * shared layer by a relative name, and anything absolute or climbing out of the root is refused
   * before it is touched. `realpath` would visit the target first and judge after.
   */
  private async resolve (name: string): Promise<string | undefined> {
    const out = (): StrataError => new StrataError('UNSAFE_PATH', `"${name}" in ${this.path} is a symlink that leads out of the archive`)
    let pending = name.split('/')
    const done: string[] = []
    for (let hops = 0; pending.length > 0;) {
      const part = pending.shift()!
      if (part === '' || part === '.') continue
      if (part === '..') {
        if (done.pop() === undefined) throw out()
        continue
      }
      done.push(part)
      const abs = join(this.path, ...done)
      this.guard(abs)
      let st
      try {
        st = await lstat(abs)
      } catch (err) {
        if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined
        throw err
      }
      if (!st.isSymbolicLink()) continue
      if (++hops > MAX_LINK_HOPS) throw new StrataError('BAD_IMAGE', `"${name}" in ${this.path} is a loop of links`)
      const target = await readlink(abs)
      if (target.startsWith('/')) throw out()
      done.pop()
      pending = [...target.split('/'), ...pending]
    }
    const real = join(this.path, ...done)
    this.resolved.set(name, real)
    return real
  }

  async size (name: string): Promise<number | undefined> {
    const real = await this.resolve(name)
    if (real === undefined) return undefined
    const st = await lstat(real)
    return st.isFile() ? st.size : undefined
  }

  read (name: string, what: string): Promise<Buffer> {
    return readLimited(this, name, what)
  }

  async head (name: string, n: number): Promise<Buffer> {
    return readHead(this.stream(name), n)
  }

  stream (name: string): Readable {
    const real = this.resolved.get(name)
    if (real === undefined) throw missing(this, name, 'file')
    return createReadStream(real)
  }

  async close (): Promise<void> {}
}

interface TarMember { offset: number; size: number }
type TarLink = { link: string }

/**
 * A tar read in place: one pass records where each file's data starts, and reads are ranges of
 * the file. A gzipped tar is inflated to a scratch file first, as ranges need a plain one.
 */
class TarSource implements ImageSource {
  private readonly members = new Map<string, TarMember | TarLink>()

  private constructor (readonly path: string, private readonly file: string, private readonly fileSize: number, private readonly scratch?: string) {}

  static async open (path: string, tmpDir: string): Promise<TarSource> {
    const fh = await open(path, 'r')
    const magic = Buffer.alloc(GZIP_MAGIC.length)
    try {
      await fh.read(magic, 0, magic.length, 0)
    } finally {
      await fh.close()
    }
    let file = path
    let scratch: string | undefined
    if (magic.equals(GZIP_MAGIC)) {
      scratch = await mkdtemp(join(tmpDir, 'archive-'))
      file = join(scratch, 'archive.tar')
      try {
        await pipeline(createReadStream(path), createGunzip(), createWriteStream(file))
      } catch (err) {
        await rm(scratch, { recursive: true, force: true })
        throw new StrataError('BAD_IMAGE', `${path}: corrupt gzip stream (${(err as Error).message})`, { cause: err })
      }
    }
    const source = new TarSource(path, file, (await stat(file)).size, scratch)
    try {
      await source.index()
    } catch (err) {
      await source.close()
      throw err
    }
    return source
  }

  private async index (): Promise<void> {
    const parser = tar.extract()
    parser.on('entry', (h: tar.Header & { byteOffset?: number }, data, next) => {
      const name = h.name.split('/').filter((p) => p !== '' && p !== '.').join('/')
      if (h.type === 'file' || h.type === 'contiguous-file') {
        this.members.set(name, { offset: h.byteOffset ?? -1, size: h.size ?? 0 })
      } else if (h.type === 'symlink' && h.linkname != null) {
        // `docker save` writes a layer shared by two images once and links the other name to it.
        this.members.set(name, { link: h.linkname.startsWith('/') ? h.linkname : posix.join(posix.dirname(name), h.linkname) })
      } else if (h.type === 'link' && h.linkname != null) {
        this.members.set(name, { link: h.linkname })
      } else {
        this.members.delete(name)
      }
      data.on('end', () => next()).resume()
    })
    try {
      await pipeline(createReadStream(this.file), parser)
    } catch (err) {
      const msg = (err as Error).message
      if (/Unexpected end of data/.test(msg)) throw new StrataError('BAD_IMAGE', `${this.path} is truncated (unexpected end of tar)`, { cause: err })
      throw new StrataError('BAD_IMAGE', `${this.path} is not a valid tar archive (${msg})`, { cause: err })
    }
  }

  private member (name: string): TarMember | undefined {
    let current = name
    for (let hops = 0; hops <= MAX_LINK_HOPS; hops++) {
      const m = this.members.get(current)
      if (m === undefined) return undefined
      if (!('link' in m)) return m
      // A link is only another name inside this archive; one pointing out of it names nothing.
      if (m.link.startsWith('/') || posix.normalize(m.link).startsWith('..')) return undefined
      current = posix.normalize(m.link)
    }
    throw new StrataError('BAD_IMAGE', `"${name}" in ${this.path} is a loop of links`)
  }

  async size (name: string): Promise<number | undefined> {
    const m = this.member(name)
    if (m === undefined) return undefined
    if (m.offset < 0 || m.offset + m.size > this.fileSize) throw new StrataError('BAD_IMAGE', `${this.path} is truncated inside "${name}"`)
    return m.size
  }

  read (name: string, what: string): Promise<Buffer> {
    return readLimited(this, name, what)
  }

  async head (name: string, n: number): Promise<Buffer> {
    const m = this.member(name)
    if (m === undefined) throw missing(this, name, 'file')
    const fh = await open(this.file, 'r')
    try {
      const buf = Buffer.alloc(Math.min(n, m.size))
      const { bytesRead } = await fh.read(buf, 0, buf.length, m.offset)
      return buf.subarray(0, bytesRead)
    } finally {
      await fh.close()
    }
  }

  stream (name: string): Readable {
    const m = this.member(name)
    if (m === undefined) throw missing(this, name, 'file')
    if (m.size === 0) return Readable.from([])
    return createReadStream(this.file, { start: m.offset, end: m.offset + m.size - 1 })
  }

  async close (): Promise<void> {
    if (this.scratch !== undefined) await rm(this.scratch, { recursive: true, force: true })
  }
}

/**
 * Opens a directory or a tar (plain or gzipped) as an image archive. `tmpDir` takes an inflated
 * copy of a gzipped one; `guard` vets every path inside a directory archive before it is touched.
 */
export async function openImageSource (path: string, tmpDir: string, guard: PathGuard = () => {}): Promise<ImageSource> {
  let st
  try {
    st = await lstat(path)
    if (st.isSymbolicLink()) st = await stat(path)
  } catch (err) {
    if (errorCode(err) === 'ENOENT') throw new StrataError('NOT_FOUND', `${path} does not exist`, { cause: err })
    throw err
  }
  if (st.isDirectory()) return new DirectorySource(path, guard)
  if (st.isFile()) return TarSource.open(path, tmpDir)
  throw new StrataError('BAD_REQUEST', `${path} is neither a directory nor a tar file`)
}
