import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import * as tar from 'tar-stream'

/** One tar entry for a fixture: a tar-stream header plus an optional body for files. */
export interface FixtureEntry extends Partial<tar.Header> {
  name: string
  body?: string | Buffer
  pax?: Record<string, string>
}

/** Builds a tar in memory with tar-stream, exactly as listed: hostile entries included. */
export async function buildTar (entries: FixtureEntry[], opts: { gzip?: boolean } = {}): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const collected = (async () => { for await (const c of pack) chunks.push(Buffer.from(c as Uint8Array)) })()
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const h = { mtime: new Date(1_600_000_000_000), ...header } as tar.Header
      const cb = (err?: Error | null): void => { if (err) reject(err); else resolve() }
      if (body !== undefined || h.type === undefined || h.type === 'file') pack.entry(h, body ?? Buffer.alloc(0), cb)
      else pack.entry(h, cb)
    })
  }
  pack.finalize()
  await collected
  const raw = Buffer.concat(chunks)
  return opts.gzip === true ? gzipSync(raw) : raw
}

export function streamOf (buf: Buffer): Readable {
  return Readable.from([buf])
}

export function sha256Digest (buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`
}
