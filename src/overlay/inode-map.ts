import fs from 'node:fs'
import type { Logger } from 'pino'
import { StrataError, errorCode } from '../errors.js'

/**
 * Upper inode → the inode number the merged view showed for that file before its copy-up, so
 * st_ino stays the same across copy-up (git, tar and rsync remember inode numbers), also across
 * remounts and daemon restarts. Kept as an append-only log beside the upper (one `upper overlay`
 * pair per line, `upper -` forgets), replayed at mount and compacted at unmount.
 *
 * A line that cannot be written (a full disk) fails nothing: the copy-up or removal it notes is
 * done by then, and `rm` must work on a full disk. The map stays right for this mount, and the
 * unmount's compaction writes it whole if there is room by then.
 */
export class InodeMap {
  private readonly map = new Map<number, number>()
  /** Kept open for appends: a copy-up should not pay an open and a close to note one line. */
  private fd: number | undefined
  /** The log's length once `fd` is open: where a line cut short by a full disk is cut off again. */
  private length = 0
  /** An append failed and has not been followed by one that worked: warned once. */
  private failing = false

  constructor (private readonly file: string, private readonly log: Logger) {}

  load (): void {
    let text: string
    try {
      text = fs.readFileSync(this.file, 'utf8')
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return
      throw err
    }
    for (const line of text.split('\n')) {
      const [upper, shown] = line.split(' ')
      if (upper === undefined || upper === '' || shown === undefined) continue
      if (shown === '-') this.map.delete(Number(upper))
      else this.map.set(Number(upper), Number(shown))
    }
  }

  get (upperIno: number): number | undefined {
    return this.map.get(upperIno)
  }

  set (upperIno: number, shown: number): void {
    this.map.set(upperIno, shown)
    this.append(`${upperIno} ${shown}\n`)
  }

  /** The upper inode is gone (its last name removed): its number may be reused by a new file. */
  forget (upperIno: number): void {
    if (!this.map.delete(upperIno)) return
    this.append(`${upperIno} -\n`)
  }

  private append (line: string): void {
    try {
      if (this.fd === undefined) {
        this.fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600)
        this.length = fs.fstatSync(this.fd).size
      }
      const bytes = Buffer.from(line)
      const written = fs.writeSync(this.fd, bytes)
      // Half a line would read back as another mapping, or join the next line.
      if (written !== bytes.length) {
        fs.ftruncateSync(this.fd, this.length)
        throw new StrataError('ENOSPC', `${this.file}: a line cut short`)
      }
      this.length += written
      this.failing = false
    } catch (err) {
      if (!this.failing) this.log.warn({ err, file: this.file }, 'cannot note inode numbers; they stay right until the unmount writes them')
      this.failing = true
    }
  }

  /** Rewrites the log as the current map, through a rename so a crash keeps the old one. */
  compact (): void {
    if (this.fd !== undefined) fs.closeSync(this.fd)
    this.fd = undefined
    const tmp = `${this.file}.tmp`
    try {
      fs.writeFileSync(tmp, [...this.map].map(([u, o]) => `${u} ${o}\n`).join(''), { mode: 0o600 })
      fs.renameSync(tmp, this.file)
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      this.log.warn({ err, file: this.file }, 'cannot write inode numbers: files copied up since the last line written show new ones after a remount')
    }
  }
}
