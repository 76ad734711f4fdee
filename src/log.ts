import { createRequire } from 'node:module'
import { pino, type Logger } from 'pino'

const load = createRequire(import.meta.url)

/**
 * One root logger per process; subsystems take `logger.child({ sub: 'name' })`. Pretty output on
 * a terminal, JSON otherwise. Logs go to stderr so command output on stdout stays parseable.
 * pino-pretty runs in the process rather than as a transport: a transport's worker is loaded by
 * a file path that the bundled overlay server does not keep; and it is loaded only on a terminal.
 */
export function createLogger (level = process.env.STRATAFS_LOG ?? 'info'): Logger {
  if (process.stderr.isTTY) {
    const pretty = load('pino-pretty') as typeof import('pino-pretty')
    return pino({ level }, pretty({ destination: 2, sync: true }))
  }
  return pino({ level }, pino.destination(2))
}

export type { Logger }
