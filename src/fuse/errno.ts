import os from 'node:os'
import type { Logger } from 'pino'
import { errorCode } from '../errors.js'

const ERRNO = os.constants.errno as Record<string, number>

/**
 * The only place where errors become errnos. An error whose code names an errno crosses as that
 * errno; anything else is a bug of ours, logged and answered as EIO so the daemon keeps serving.
 */
export function toErrno (err: unknown, log: Logger, op: string, path: string | null): number {
  const code = errorCode(err)
  const n = code === undefined ? undefined : ERRNO[code]
  if (n !== undefined) return -n
  log.error({ err, op, path }, 'request failed')
  return -ERRNO.EIO
}
