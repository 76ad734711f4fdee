import { unlink } from 'node:fs/promises'
import type { Server } from 'node:http'
import type { Logger } from '../log.js'
import { Store } from '../store/store.js'
import { createApiServer } from './server.js'
import { Service } from './service.js'
import { listenUnix } from './socket.js'

/** `log` is the process's root logger; each subsystem takes a child of it. */
export interface DaemonOptions { root: string; socket: string; log: Logger }

export interface RunningDaemon {
  service: Service
  server: Server
  /** Unmounts everything, stops listening, closes the store. */
  shutdown (): Promise<void>
}

/**
 * Opens the store (refusing a root another daemon holds), forgets the mounts a previous daemon
 * left behind, and serves the API. Signals are the caller's business.
 */
export async function startDaemon ({ root, socket, log: rootLog }: DaemonOptions): Promise<RunningDaemon> {
  const store = await Store.open(root, rootLog)
  const log = rootLog.child({ sub: 'daemon' })
  let server: Server | undefined
  try {
    const service = new Service(store, rootLog)
    await service.mounts.recover()
    server = createApiServer(service, rootLog.child({ sub: 'api' }))
    await listenUnix(server, socket)
    log.info({ root, socket, pid: process.pid }, 'stratafs daemon ready')
    const listening = server
    let closing: Promise<void> | undefined
    return {
      service,
      server: listening,
      shutdown: () => {
        closing ??= (async () => {
          log.info('shutting down')
          listening.close()
          listening.closeAllConnections()
          await service.mounts.unmountAll()
          await unlink(socket).catch(() => {})
          await store.close()
          log.info('stopped')
        })()
        return closing
      }
    }
  } catch (err) {
    server?.close()
    await store.close()
    throw err
  }
}
