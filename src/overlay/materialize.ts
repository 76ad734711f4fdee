import { StrataError } from '../errors.js'
import type { LowerIndex } from './lower-index.js'
import { S_IFMT, S_IFREG } from './mode.js'

/**
 * Where the data of a metacopy upper file at `path` lives: the topmost lower copy of the same
 * path. A metacopy file is only ever made over a lower regular file, and rename and link give it
 * its data first, so anything else there means the upper and its layers do not belong together.
 */
export function lowerDataPath (lower: LowerIndex, path: string): string {
  const entry = lower.lookup(path)
  if (entry === undefined || (entry.attr.mode & S_IFMT) !== S_IFREG) {
    throw new StrataError('EIO', `${path}: metacopy file with no lower regular file under it`)
  }
  return lower.realPath(path, entry)
}
