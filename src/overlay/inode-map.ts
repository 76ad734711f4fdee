import fs from 'node:fs'
import type { Logger } from 'pino'
import { StrataError, errorCode } from '../errors.js'

/** `upper overlay` or `upper -`, inode numbers in decimal. */
const LINE = /^(\d{1,20}) (\d{1,20}|-)$/

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

  constructor (
    private readonly file: string,
    private readonly log: Logger,
    /** Whether the rewritten log reaches the disk before it replaces the old one: not on a volatile mount. */
    private readonly durable: boolean
  ) {}

  /**
   * Replays the log. A line is written by one append, so a crash can leave only the last one
   * cut short, or as zeros where the file grew and its data did not reach the disk. That tail is
   * cut off here: read as a mapping it could give a file the number another file shows (tar and
   * rsync take two files with one number for hard links), and the next line appended would join
   * it. Its file then shows a new number, as after any lost line.
   */
  load (): void {
    let text: string
    try {
      // latin1: a character per byte, so offsets in the text are offsets in the file.
      text = fs.readFileSync(this.file, 'latin1')
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return
      throw err
    }
    let whole = 0
    let unreadable = 0
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', whole)) {
      const line = text.slice(whole, nl)
      whole = nl + 1
      const pair = LINE.exec(line)
      if (pair === null) {
        if (line !== '') unreadable++
      } else if (pair[2] === '-') {
        this.map.delete(Number(pair[1]))
      } else {
        this.map.set(Number(pair[1]), Number(pair[2]))
      }
    }
    if (unreadable > 0) this.log.warn({ file: this.file, lines: unreadable }, 'inode log lines that are no mapping were skipped')
    if (whole < text.length) {
      this.log.warn({ file: this.file, bytes: text.length - whole }, 'the inode log ended in a line cut short (a crash while it was written): cut off')
      try {
        fs.truncateSync(this.file, whole)
      } catch (err) {
        this.log.warn({ err, file: this.file }, 'cannot cut the inode log short: the next line noted joins the cut one')
      }
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
      const fd = fs.openSync(tmp, 'w', 0o600)
      try {
        fs.writeFileSync(fd, [...this.map].map(([u, o]) => `${u} ${o}\n`).join(''))
        // Renamed over the log before its data reached the disk, it could be found empty after a
        // power failure: every copied-up file's number lost, not only the last ones noted.
        if (this.durable) fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(tmp, this.file)
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      this.log.warn({ err, file: this.file }, 'cannot write inode numbers: files copied up since the last line written show new ones after a remount')
    }
  }
}
