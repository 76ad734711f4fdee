import { request as httpRequest, type IncomingMessage } from 'node:http'
import { StrataError, errorCode, type ErrorCode } from '../errors.js'
import type {
  CommitRequest, CommitResult, ContainerSummary, CreateImageRequest, CreateImageResult, DiffChange, HistoryItem,
  ImageSummary, ImportLayerResult, LayerRecord, MountRequest, ProgressEvent, RemoveImageResult, StreamLine
} from '../daemon/api-types.js'
import type { ImportImageRequest, ImportImageResult } from '../daemon/image-import.js'
import type { InspectedImage } from '../daemon/image-views.js'

export type OnProgress = (event: ProgressEvent) => void

/** The daemon's API as methods. Paths must be absolute: the daemon has its own cwd. */
export class Client {
  constructor (readonly socket: string) {}

  ping (): Promise<{ ok: true }> { return this.call('GET', '/v1/ping') }
  importLayer (path: string, onProgress?: OnProgress): Promise<ImportLayerResult> { return this.stream('/v1/layers/import', { path }, onProgress) }
  layers (): Promise<LayerRecord[]> { return this.call('GET', '/v1/layers') }
  createImage (req: CreateImageRequest, onProgress?: OnProgress): Promise<CreateImageResult> { return this.stream('/v1/images/create', req, onProgress) }
  importImage (req: ImportImageRequest, onProgress?: OnProgress): Promise<ImportImageResult> { return this.stream('/v1/images/import', req, onProgress) }
  images (): Promise<ImageSummary[]> { return this.call('GET', '/v1/images') }
  inspectImage (ref: string): Promise<InspectedImage[]> { return this.call('GET', '/v1/images/inspect', { ref }) }
  imageHistory (ref: string): Promise<HistoryItem[]> { return this.call('GET', '/v1/images/history', { ref }) }
  removeImage (ref: string, force = false): Promise<RemoveImageResult> { return this.call('POST', '/v1/images/rm', { ref, force }) }
  tagImage (ref: string, tag: string): Promise<{ tag: string }> { return this.call('POST', '/v1/images/tag', { ref, tag }) }
  mount (req: MountRequest): Promise<ContainerSummary> { return this.call('POST', '/v1/mount', req) }
  unmount (target: string): Promise<ContainerSummary> { return this.call('POST', '/v1/umount', { target }) }
  containers (): Promise<ContainerSummary[]> { return this.call('GET', '/v1/containers') }
  removeContainer (ref: string, force = false): Promise<{ id: string; name: string }> { return this.call('POST', '/v1/containers/rm', { ref, force }) }
  diff (ref: string): Promise<DiffChange[]> { return this.call('GET', '/v1/containers/diff', { ref }) }
  commit (req: CommitRequest, onProgress?: OnProgress): Promise<CommitResult> { return this.stream('/v1/containers/commit', req, onProgress) }

  async call<T> (method: 'GET' | 'POST', path: string, args: object = {}): Promise<T> {
    const res = await this.send(method, path, args)
    const text = await readAll(res)
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      throw new StrataError('INTERNAL', `the daemon answered ${res.statusCode ?? '?'} with something that is not JSON`)
    }
    if ((res.statusCode ?? 500) >= 400) throw remoteError(body)
    return body as T
  }

  /** NDJSON: progress lines, then one result or error line. */
  async stream<T> (path: string, args: object, onProgress?: OnProgress): Promise<T> {
    const res = await this.send('POST', path, args)
    if ((res.statusCode ?? 500) >= 400) throw remoteError(JSON.parse(await readAll(res)))
    let buffered = ''
    for await (const chunk of res.setEncoding('utf8') as AsyncIterable<string>) {
      buffered += chunk
      let nl: number
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, nl)) as StreamLine<T>
        buffered = buffered.slice(nl + 1)
        if ('progress' in line) onProgress?.(line.progress)
        else if ('error' in line) throw remoteError(line.error)
        else return line.result
      }
    }
    throw new StrataError('INTERNAL', 'the daemon closed the stream without a result')
  }

  private send (method: 'GET' | 'POST', path: string, args: object): Promise<IncomingMessage> {
    let url = path
    let body: string | undefined
    if (method === 'GET') {
      const q = new URLSearchParams(Object.entries(args).map(([k, v]) => [k, String(v)])).toString()
      if (q !== '') url += `?${q}`
    } else {
      body = JSON.stringify(args)
    }
    return new Promise((resolve, reject) => {
      const req = httpRequest({ socketPath: this.socket, path: url, method, headers: { 'content-type': 'application/json' } }, resolve)
      req.on('error', (err) => {
        const code = errorCode(err)
        if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ENOTSOCK') {
          reject(new StrataError('NO_DAEMON', `no daemon at ${this.socket} (start it with 'stratafs daemon')`))
        } else if (code === 'EACCES') {
          reject(new StrataError('EACCES', `permission denied on ${this.socket}`))
        } else {
          reject(new StrataError('INTERNAL', `cannot talk to the daemon at ${this.socket}: ${err.message}`))
        }
      })
      req.end(body)
    })
  }
}

async function readAll (res: IncomingMessage): Promise<string> {
  let text = ''
  for await (const chunk of res.setEncoding('utf8') as AsyncIterable<string>) text += chunk
  return text
}

function remoteError (body: unknown): StrataError {
  const { code, message } = (body ?? {}) as { code?: string; message?: string }
  return new StrataError((code ?? 'INTERNAL') as ErrorCode, message ?? 'the daemon reported an error without a message')
}
