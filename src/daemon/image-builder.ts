import { StrataError } from '../errors.js'
import { ociArchitecture, type HistoryEntry, type ImageConfig } from '../store/image-config.js'
import type { CreateImageRequest } from './api-types.js'

/** `KEY=VALUE` pairs from the command line; docker accepts an empty value, not an empty key. */
function pairs (list: string[] | undefined, what: string): Array<[string, string]> {
  return (list ?? []).map((s) => {
    const eq = typeof s === 'string' ? s.indexOf('=') : -1
    if (eq <= 0) throw new StrataError('BAD_REQUEST', `${what} must be KEY=VALUE, got ${JSON.stringify(s)}`)
    return [s.slice(0, eq), s.slice(eq + 1)]
  })
}

/** A JSON array is taken as exec form, anything else as shell form, as in a Dockerfile. */
function parseCmd (cmd: string): string[] {
  if (cmd.trimStart().startsWith('[')) {
    let parsed: unknown
    try {
      parsed = JSON.parse(cmd)
    } catch {
      throw new StrataError('BAD_REQUEST', `--cmd is not a valid JSON array: ${cmd}`)
    }
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
      throw new StrataError('BAD_REQUEST', '--cmd as JSON must be an array of strings')
    }
    return parsed
  }
  return ['/bin/sh', '-c', cmd]
}

/** The config of a new image from `image create` options and its resolved layers. */
export function buildImageConfig (req: CreateImageRequest, diffIds: string[], sources: string[]): ImageConfig {
  const created = new Date().toISOString()
  const env = pairs(req.env, '--env')
  const labels = pairs(req.labels, '--label')
  if (req.workdir !== undefined && !req.workdir.startsWith('/')) throw new StrataError('BAD_REQUEST', '--workdir must be an absolute path')
  const config: ImageConfig['config'] = {}
  if (env.length > 0) config.Env = env.map(([k, v]) => `${k}=${v}`)
  if (req.cmd !== undefined) config.Cmd = parseCmd(req.cmd)
  if (req.workdir !== undefined) config.WorkingDir = req.workdir
  if (labels.length > 0) config.Labels = Object.fromEntries(labels)
  const history: HistoryEntry[] = diffIds.map((_, i) => ({
    created,
    created_by: req.createdBy ?? `stratafs layer import ${sources[i]}`
  }))
  return { architecture: ociArchitecture(), os: 'linux', created, config, rootfs: { type: 'layers', diff_ids: diffIds }, history }
}

/** The parent's config with one more layer on top, as `docker commit` makes it. */
export function commitConfig (parent: ImageConfig, diffId: string, comment?: string): ImageConfig {
  const created = new Date().toISOString()
  const entry: HistoryEntry = { created, created_by: 'stratafs commit' }
  if (comment !== undefined && comment !== '') entry.comment = comment
  return {
    ...parent,
    created,
    rootfs: { type: 'layers', diff_ids: [...parent.rootfs.diff_ids, diffId] },
    history: [...(parent.history ?? []), entry]
  }
}
