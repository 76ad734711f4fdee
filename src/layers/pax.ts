import type { Timespec } from './entry.js'

/** The PAX records we read and write beyond what tar-stream handles itself (path, linkpath, size). */
export const SCHILY_XATTR = 'SCHILY.xattr.'
/** bsdtar's form: URL-encoded name, base64 value, so binary values survive. */
export const LIBARCHIVE_XATTR = 'LIBARCHIVE.xattr.'

type Records = Record<string, string>

const TIME = /^(-?)(\d+)(?:\.(\d*))?$/

/** PAX times are decimal seconds with an optional fraction ("1700000000.123456789"). */
export function parsePaxTime (value: string | undefined): Timespec | undefined {
  if (value === undefined) return undefined
  const m = TIME.exec(value)
  if (m === null) return undefined
  const sec = Number(m[2])
  const nsec = Number((m[3] ?? '').padEnd(9, '0').slice(0, 9))
  if (m[1] !== '-') return [sec, nsec]
  return nsec === 0 ? [-sec, 0] : [-sec - 1, 1_000_000_000 - nsec]
}

export function formatPaxTime ([sec, nsec]: Timespec): string {
  if (sec >= 0) return `${sec}.${String(nsec).padStart(9, '0')}`
  const whole = nsec === 0 ? -sec : -sec - 1
  return nsec === 0 ? `-${whole}` : `-${whole}.${String(1_000_000_000 - nsec).padStart(9, '0')}`
}

export function parsePaxId (value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined
  return Number(value)
}

/**
 * Extended attributes carried by an entry's PAX records, in either spelling. tar-stream hands
 * SCHILY values over as UTF-8 strings, so only text values survive that form byte for byte.
 */
export function paxXattrs (pax: Records | null | undefined): Map<string, Buffer> {
  const out = new Map<string, Buffer>()
  if (pax === null || pax === undefined) return out
  for (const [key, value] of Object.entries(pax)) {
    if (key.startsWith(SCHILY_XATTR)) {
      out.set(key.slice(SCHILY_XATTR.length), Buffer.from(value, 'utf8'))
    } else if (key.startsWith(LIBARCHIVE_XATTR)) {
      out.set(decodeURIComponent(key.slice(LIBARCHIVE_XATTR.length)), Buffer.from(value, 'base64'))
    }
  }
  return out
}

/** True when a value written as a UTF-8 PAX string reads back as the same bytes. */
export function isUtf8Clean (value: Buffer): boolean {
  return Buffer.from(value.toString('utf8'), 'utf8').equals(value)
}
