import { StrataError } from '../errors.js'

/**
 * Docker's reference grammar, narrowed to what a local store needs: lowercase path components
 * (optionally behind a registry host with a port) and a tag. A bare name means `:latest`.
 */
const component = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*'
const host = '(?:[a-zA-Z0-9-]+(?:\\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?'
const nameRe = new RegExp(`^${host}${component}(?:/${component})*$`)
const tagRe = /^[\w][\w.-]{0,127}$/

export interface TagRef { repository: string; tag: string }

/** Splits `name[:tag]`; the tag is after the last ':' that follows the last '/'. */
export function parseTag (ref: string): TagRef {
  const slash = ref.lastIndexOf('/')
  const colon = ref.lastIndexOf(':')
  const [repository, tag] = colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest']
  if (!nameRe.test(repository) || repository.length > 255) {
    throw new StrataError('BAD_REQUEST', `invalid reference format: ${JSON.stringify(ref)} (repository names must be lowercase)`)
  }
  if (!tagRe.test(tag)) throw new StrataError('BAD_REQUEST', `invalid tag in ${JSON.stringify(ref)}`)
  return { repository, tag }
}

export function normalizeTag (ref: string): string {
  const { repository, tag } = parseTag(ref)
  return `${repository}:${tag}`
}

/** Whether `ref` could be a tag at all (an id prefix like `sha256:ab12` cannot). */
export function looksLikeTag (ref: string): boolean {
  try {
    parseTag(ref)
    return true
  } catch {
    return false
  }
}
