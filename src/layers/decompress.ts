import { Readable } from 'node:stream'

const GZIP_MAGIC = [0x1f, 0x8b]

/**
 * Looks at the first bytes of `input` to tell a gzipped tar from a plain one. File names lie
 * (`.tar` files that are gzipped, `.tgz` that are not), the magic does not. Returns the verdict
 * and the input with the sniffed bytes put back in front.
 */
export async function sniffGzip (input: Readable): Promise<{ gzip: boolean, stream: Readable }> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  const head: Buffer[] = []
  let headLen = 0
  let done = false
  while (headLen < GZIP_MAGIC.length) {
    const next = await it.next()
    if (next.done === true) { done = true; break }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value)
    head.push(chunk)
    headLen += chunk.length
  }
  const first = Buffer.concat(head)
  const gzip = GZIP_MAGIC.every((b, i) => first[i] === b)
  async function * replay (): AsyncGenerator<Buffer> {
    try {
      if (first.length > 0) yield first
      if (done) return
      for (;;) {
        const next = await it.next()
        if (next.done === true) return
        yield Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value)
      }
    } finally {
      // A reader that stops early (a refused entry) must still close the input, file descriptor and all.
      await it.return?.()
    }
  }
  return { gzip, stream: Readable.from(replay(), { objectMode: false }) }
}
