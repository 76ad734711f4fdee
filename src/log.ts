import { pino, type Logger } from 'pino'

/**
 * One root logger per process; subsystems take `logger.child({ sub: 'name' })`. Pretty output on
 * a terminal, JSON otherwise. Logs go to stderr so command output on stdout stays parseable.
 */
export function createLogger (level = process.env.STRATAFS_LOG ?? 'info'): Logger {
  if (process.stderr.isTTY) {
    return pino({ level, transport: { target: 'pino-pretty', options: { destination: 2 } } })
  }
  return pino({ level }, pino.destination(2))
}

export type { Logger }
