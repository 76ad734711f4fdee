import { statSync } from 'node:fs'
import cliProgress from 'cli-progress'
import type { OnProgress } from '../client/client.js'

/** Below this a bar would flash by unread. */
const MIN_BYTES = 8 << 20

/**
 * A progress bar on stderr for a big import on a terminal; nothing otherwise. The total comes
 * from the daemon when it knows it, else from the input file's size.
 */
export function progressBar (): { onProgress: OnProgress; stop (): void } {
  let bar: cliProgress.SingleBar | undefined
  let current = ''
  const sizes = new Map<string, number | undefined>()
  const sizeOf = (source: string): number | undefined => {
    if (!sizes.has(source)) {
      let size: number | undefined
      try {
        const st = statSync(source)
        if (st.isFile()) size = st.size
      } catch {}
      sizes.set(source, size)
    }
    return sizes.get(source)
  }
  const onProgress: OnProgress = (event) => {
    if (process.stderr.isTTY !== true) return
    const total = event.total ?? sizeOf(event.source)
    if (total === undefined || total < MIN_BYTES) return
    if (bar === undefined || current !== event.source) {
      bar?.stop()
      current = event.source
      bar = new cliProgress.SingleBar({
        format: ' {bar} {percentage}% | {value}/{total} MiB | {source}',
        stream: process.stderr,
        hideCursor: true
      }, cliProgress.Presets.shades_classic)
      bar.start(Math.ceil(total / (1 << 20)), 0, { source: event.source })
    }
    bar.update(Math.min(Math.floor(event.done / (1 << 20)), Math.ceil(total / (1 << 20))))
  }
  return { onProgress, stop: () => bar?.stop() }
}

/** Runs a daemon call with a progress bar, gone before the caller prints the result. */
export async function withProgress<T> (call: (onProgress: OnProgress) => Promise<T>): Promise<T> {
  const bar = progressBar()
  try {
    return await call(bar.onProgress)
  } finally {
    bar.stop()
  }
}
