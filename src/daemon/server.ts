import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { StrataError, errorCode } from '../errors.js'
import type { Logger } from '../log.js'
import { routes, type Args, type Route } from './api.js'
import type { Service } from './service.js'

const MAX_BODY = 1 << 20

const statusByCode: Record<string, number> = {
  NOT_FOUND: 404, ENOENT: 404,
  CONFLICT: 409, EEXIST: 409, EBUSY: 409, ENOTEMPTY: 409,
  BAD_REQUEST: 400, EINVAL: 400, ENOTDIR: 400, EISDIR: 400, ELOOP: 400, BAD_TAR: 400, BAD_IMAGE: 400, UNSAFE_PATH: 400, ENAMETOOLONG: 400,
  EACCES: 403, EPERM: 403, EROFS: 403,
  STORE_LOCKED: 423
}

/** What a client is told about a failure: our own errors as they are, fs errors by their code. */
export function errorBody (err: unknown): { status: number; code: string; message: string } {
  if (err instanceof StrataError) return { status: statusByCode[err.code] ?? 500, code: err.code, message: err.message }
  const code = errorCode(err)
  const message = err instanceof Error ? err.message : String(err)
  if (code !== undefined && /^E[A-Z]+$/.test(code)) return { status: statusByCode[code] ?? 500, code, message }
  return { status: 500, code: 'INTERNAL', message: `internal error: ${message}` }
}

async function readArgs (req: IncomingMessage, url: URL): Promise<Args> {
  if (req.method === 'GET') return Object.fromEntries(url.searchParams)
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY) throw new StrataError('BAD_REQUEST', 'request body too large')
    chunks.push(chunk)
  }
  if (size === 0) return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new StrataError('BAD_REQUEST', 'request body is not JSON')
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new StrataError('BAD_REQUEST', 'request body must be a JSON object')
  return parsed as Args
}

/**
 * The JSON API over HTTP. Each request is caught on its own: a bad request gets an error answer
 * and a log line, never a crashed daemon.
 */
export function createApiServer (service: Service, log: Logger): Server {
  const table = new Map<string, Route>(routes.map((r) => [`${r.method} ${r.path}`, r]))
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = performance.now()
    const url = new URL(req.url ?? '/', 'http://stratafs')
    const route = table.get(`${req.method ?? ''} ${url.pathname}`)
    const reply = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    try {
      if (route === undefined) throw new StrataError('NOT_FOUND', `no such API route: ${req.method ?? ''} ${url.pathname}`)
      const args = await readArgs(req, url)
      if (route.stream === true) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        const line = (obj: unknown): void => { if (!res.writableEnded) res.write(JSON.stringify(obj) + '\n') }
        try {
          line({ result: await route.handle(service, args, (progress) => line({ progress })) })
        } catch (err) {
          const { code, message } = errorBody(err)
          if (code === 'INTERNAL') log.error({ err, route: route.path }, 'request failed')
          else log.info({ route: route.path, code, message }, 'request refused')
          line({ error: { code, message } })
        }
        res.end()
      } else {
        reply(200, await route.handle(service, args, () => {}))
      }
      log.debug({ route: route.path, ms: Math.round(performance.now() - started) }, 'request done')
    } catch (err) {
      const { status, code, message } = errorBody(err)
      if (status === 500) log.error({ err, url: req.url }, 'request failed')
      else log.info({ url: req.url, code, message }, 'request refused')
      if (!res.headersSent) reply(status, { code, message })
      else res.end()
    }
  }
  return createServer((req, res) => { handle(req, res).catch((err: unknown) => log.error({ err }, 'response failed')) })
}
