import { createHash, type Hash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'

const DIGEST = /^sha256:[0-9a-f]{64}$/

export function sha256Hex (data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** True for a full `sha256:<64 lowercase hex>` string, the only digest form the store accepts. */
export function isDigest (value: string): boolean {
  return DIGEST.test(value)
}

/** The hex part of a digest, which names a layer's directory on disk. */
export function digestHex (digest: string): string {
  if (!isDigest(digest)) throw new TypeError(`not a sha256 digest: ${digest}`)
  return digest.slice('sha256:'.length)
}

/**
 * ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256("<ChainID(L0..n-1)> <DiffID(Ln)>"), as the
 * OCI image spec defines it. Returns one ChainID per prefix of the stack.
 */
export function chainIds (diffIds: string[]): string[] {
  const out: string[] = []
  for (const diffId of diffIds) {
    const previous = out[out.length - 1]
    out.push(previous === undefined ? diffId : `sha256:${sha256Hex(`${previous} ${diffId}`)}`)
  }
  return out
}

/**
 * A pass-through that hashes and counts what flows through it, so a digest is computed in the
 * same pass that consumes the data. It also keeps the last bytes seen, which lets a tar reader
 * check the stream really ended with an end-of-archive block.
 */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256')
  private tailBuf: Buffer = Buffer.alloc(0)
  bytes = 0

  constructor (private readonly tailSize = 0) {
    super()
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    if (this.tailSize > 0) {
      const joined = chunk.length >= this.tailSize ? chunk : Buffer.concat([this.tailBuf, chunk])
      this.tailBuf = Buffer.from(joined.subarray(Math.max(0, joined.length - this.tailSize)))
    }
    cb(null, chunk)
  }

  /** `sha256:<hex>`; valid once the stream has ended. */
  digest (): string {
    return `sha256:${this.hash.copy().digest('hex')}`
  }

  /** Up to `tailSize` final bytes seen so far. */
  tail (): Buffer {
    return this.tailBuf
  }
}
