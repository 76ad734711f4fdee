import { chmod, lstat, unlink } from 'node:fs/promises'
import { connect } from 'node:net'
import type { Server } from 'node:http'
import { StrataError, errorCode } from '../errors.js'

function answers (socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/**
 * Listens on a unix socket only the owner can use: whoever can talk to the daemon can mount.
 * The socket of a dead daemon is replaced; a live one is left alone.
 */
export async function listenUnix (server: Server, socket: string): Promise<void> {
  const existing = await lstat(socket).catch((err: unknown) => {
    if (errorCode(err) === 'ENOENT') return undefined
    throw err
  })
  if (existing !== undefined) {
    if (!existing.isSocket()) throw new StrataError('CONFLICT', `${socket} exists and is not a socket`)
    if (await answers(socket)) throw new StrataError('CONFLICT', `a stratafs daemon is already listening on ${socket}`)
    await unlink(socket)
  }
  const umask = process.umask(0o177)
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(socket, () => { server.off('error', reject); resolve() })
    })
  } finally {
    process.umask(umask)
  }
  await chmod(socket, 0o600)
}
