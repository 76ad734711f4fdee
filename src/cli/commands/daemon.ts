import type { Command } from '../command.js'

/**
 * `stratafs daemon`: runs in the foreground until SIGINT/SIGTERM, then unmounts everything,
 * closes the store and exits 0.
 */
export const daemonCommands: Command[] = [{
  words: ['daemon'],
  usage: 'daemon [--root DIR] [--socket PATH]',
  summary: 'run the daemon (foreground; logs on stderr)',
  args: { min: 0, max: 0 },
  async run (ctx) {
    // Loaded here so the other commands start without the store, FUSE and LevelDB bindings.
    const [{ createLogger }, { startDaemon }] = await Promise.all([import('../../log.js'), import('../../daemon/daemon.js')])
    const root = createLogger()
    const log = root.child({ sub: 'daemon' })
    const daemon = await startDaemon({ root: ctx.root, socket: ctx.socket, log: root })
    const stop = (signal: string): void => {
      log.info({ signal }, 'signal received')
      daemon.shutdown().then(
        () => process.exit(0),
        (err: unknown) => { log.error({ err }, 'shutdown failed'); process.exit(1) }
      )
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
    // Requests are caught one by one; anything that still escapes is logged, not fatal: a dying
    // daemon would leave its mounts dead for every process using them.
    process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'))
    process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'))
    await new Promise<never>(() => {})
  }
}]
