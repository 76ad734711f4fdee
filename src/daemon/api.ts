import { StrataError } from '../errors.js'
import type { Progress, Service } from './service.js'

/**
 * The routes of the API. A streaming route answers NDJSON: progress lines, then one result or
 * error line. GET routes read their arguments from the query string, POST routes from a JSON body.
 */
export interface Route {
  method: 'GET' | 'POST'
  path: string
  stream?: true
  handle (service: Service, args: Args, progress: Progress): Promise<unknown>
}

/** Untrusted request arguments, read with the typed getters below. */
export type Args = Record<string, unknown>

export function str (args: Args, key: string): string {
  const v = args[key]
  if (typeof v !== 'string' || v === '') throw new StrataError('BAD_REQUEST', `missing argument: ${key}`)
  return v
}

function optStr (args: Args, key: string): string | undefined {
  const v = args[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw new StrataError('BAD_REQUEST', `argument ${key} must be a string`)
  return v
}

function strList (args: Args, key: string): string[] | undefined {
  const v = args[key]
  if (v === undefined) return undefined
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new StrataError('BAD_REQUEST', `argument ${key} must be a list of strings`)
  return v
}

const bool = (args: Args, key: string): boolean => args[key] === true || args[key] === 'true' || args[key] === '1'

export const routes: Route[] = [
  { method: 'GET', path: '/v1/ping', handle: async () => ({ ok: true }) },
  { method: 'POST', path: '/v1/layers/import', stream: true, handle: (s, a, p) => s.importLayer(str(a, 'path'), p) },
  { method: 'GET', path: '/v1/layers', handle: (s) => s.layers() },
  {
    method: 'POST',
    path: '/v1/images/create',
    stream: true,
    handle: (s, a, p) => s.createImage({
      tag: str(a, 'tag'),
      layers: strList(a, 'layers') ?? [],
      env: strList(a, 'env'),
      cmd: optStr(a, 'cmd'),
      workdir: optStr(a, 'workdir'),
      labels: strList(a, 'labels'),
      createdBy: optStr(a, 'createdBy')
    }, p)
  },
  {
    method: 'POST',
    path: '/v1/images/import',
    stream: true,
    handle: (s, a, p) => s.importImage({ path: str(a, 'path'), tag: optStr(a, 'tag') }, p)
  },
  { method: 'GET', path: '/v1/images', handle: (s) => s.images() },
  { method: 'GET', path: '/v1/images/inspect', handle: (s, a) => s.inspectImage(str(a, 'ref')) },
  { method: 'GET', path: '/v1/images/history', handle: (s, a) => s.imageHistory(str(a, 'ref')) },
  { method: 'POST', path: '/v1/images/rm', handle: (s, a) => s.removeImage(str(a, 'ref'), bool(a, 'force')) },
  { method: 'POST', path: '/v1/images/tag', handle: (s, a) => s.tagImage(str(a, 'ref'), str(a, 'tag')) },
  {
    method: 'POST',
    path: '/v1/mount',
    handle: (s, a) => s.mount({ image: str(a, 'image'), mountpoint: str(a, 'mountpoint'), name: optStr(a, 'name'), readOnly: bool(a, 'readOnly') })
  },
  { method: 'POST', path: '/v1/umount', handle: (s, a) => s.unmount(str(a, 'target')) },
  { method: 'GET', path: '/v1/containers', handle: (s) => s.containers() },
  { method: 'POST', path: '/v1/containers/rm', handle: (s, a) => s.removeContainer(str(a, 'ref'), bool(a, 'force')) },
  { method: 'GET', path: '/v1/containers/diff', handle: (s, a) => s.diff(str(a, 'ref')) },
  {
    method: 'POST',
    path: '/v1/containers/commit',
    stream: true,
    handle: (s, a, p) => s.commit({ container: str(a, 'container'), tag: str(a, 'tag'), message: optStr(a, 'message') }, p)
  }
]
