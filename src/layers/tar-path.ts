import { StrataError } from '../errors.js'

/**
 * Splits a tar entry name into path components, refusing what could land outside the layer:
 * absolute names and `..` components. `./` prefixes, `.` components and doubled or trailing
 * slashes are harmless and dropped. The layer root itself comes back as [].
 */
export function entryComponents (name: string, what = 'entry'): string[] {
  if (name.startsWith('/')) {
    throw new StrataError('UNSAFE_PATH', `tar ${what} "${name}" is an absolute path`)
  }
  const parts: string[] = []
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') throw new StrataError('UNSAFE_PATH', `tar ${what} "${name}" has a ".." component`)
    if (part.includes('\0')) throw new StrataError('BAD_TAR', `tar ${what} "${name}" contains a NUL byte`)
    parts.push(part)
  }
  return parts
}
