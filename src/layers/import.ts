import { createReadStream, statSync, chmodSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { StrataError, errorCode } from '../errors.js'
import { copyLayerTree } from './copy-tree.js'
import { HashingStream } from './digest.js'
import { extractLayerTar } from './extract.js'
import { scanLayer } from './scan.js'
import { layerTar } from './tar-writer.js'
import { S_IFMT, S_IFREG } from './whiteout.js'

export interface ImportOptions {
  /** `done` and `total` in bytes: of the input file for a tar, of regular-file data for a directory. */
  onProgress?(done: number, total?: number): void
}

export interface ImportedLayer {
  diffId: string
  /** Length of the layer's uncompressed tar stream. */
  size: number
  /** The staged layer directory under tmpDir, for the store to rename into place or discard. */
  dir: string
}

/** sha256 and length of a stream, consumed and dropped. */
async function digestOf (stream: NodeJS.ReadableStream): Promise<{ diffId: string, size: number }> {
  const hasher = new HashingStream()
  const sink = new Writable({ write (_chunk, _enc, cb) { cb() } })
  await pipeline(stream, hasher, sink)
  return { diffId: hasher.digest(), size: hasher.bytes }
}

/** Data bytes a copy of `dir` moves: each hard-linked inode once, as the copy links the rest. */
function regularBytes (dir: string): number {
  let total = 0
  const seen = new Set<number>()
  for (const e of scanLayer(dir)) {
    if ((e.attr.mode & S_IFMT) !== S_IFREG || e.whiteout === true) continue
    if (e.attr.nlink > 1) {
      if (seen.has(e.attr.ino)) continue
      seen.add(e.attr.ino)
    }
    total += e.attr.size
  }
  return total
}

/**
 * Stages a layer from a directory or a tar / tar.gz file into a fresh directory under tmpDir,
 * in the kernel overlayfs form, and returns its DiffID. A directory's DiffID is that of the tar
 * `layerTar` writes for the copy, so the same content has the same DiffID whether it arrives as
 * a directory or as that tar.
 */
export async function importLayer (source: string, tmpDir: string, opts: ImportOptions = {}): Promise<ImportedLayer> {
  let st
  try {
    st = statSync(source)
  } catch (err) {
    if (errorCode(err) === 'ENOENT') throw new StrataError('NOT_FOUND', `${source} does not exist`, { cause: err })
    throw err
  }
  if (!st.isDirectory() && !st.isFile()) {
    throw new StrataError('BAD_REQUEST', `${source} is neither a directory nor a tar file`)
  }
  await mkdir(tmpDir, { recursive: true })
  const dir = await mkdtemp(join(tmpDir, 'import-'))
  try {
    if (st.isDirectory()) {
      const total = regularBytes(source)
      opts.onProgress?.(0, total)
      await copyLayerTree(source, dir, (done) => opts.onProgress?.(done, total))
      return { ...await digestOf(layerTar(dir)), dir }
    }
    return await stageTar(createReadStream(source), dir, st.size, opts)
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

async function stageTar (input: Readable, dir: string, total: number | undefined, opts: ImportOptions): Promise<ImportedLayer> {
  // mkdtemp's 0700 would make the root of a read-only mount unreadable to other users; a tar
  // with a root entry sets its own mode.
  chmodSync(dir, 0o755)
  const result = await extractLayerTar(input, dir, { onProgress: (done) => opts.onProgress?.(done, total) })
  return { ...result, dir }
}

/**
 * Stages a layer from a tar stream, gzipped or not (a blob inside an image archive), as
 * `importLayer` does a tar file. `total` is the input's length when known, for progress.
 */
export async function importLayerStream (input: Readable, tmpDir: string, total?: number, opts: ImportOptions = {}): Promise<ImportedLayer> {
  await mkdir(tmpDir, { recursive: true })
  const dir = await mkdtemp(join(tmpDir, 'import-'))
  try {
    return await stageTar(input, dir, total, opts)
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}
