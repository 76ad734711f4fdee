import { Level } from 'level'
import { StrataError, errorCode } from '../errors.js'

/**
 * Opens (creating) a LevelDB. LevelDB lets one process at a time hold a database: held by
 * another → STORE_LOCKED, with `holder` saying who that probably is.
 */
export async function openDb (dir: string, holder: string): Promise<Level<string, unknown>> {
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' })
  try {
    await db.open()
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause
    if (errorCode(cause) === 'LEVEL_LOCKED' || errorCode(err) === 'LEVEL_LOCKED') throw new StrataError('STORE_LOCKED', holder)
    throw new StrataError('INTERNAL', `cannot open the database in ${dir}: ${(err as Error).message}`, { cause: err })
  }
  return db
}
