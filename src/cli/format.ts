/** Output formats as docker prints them, so people and scripts used to docker feel at home. */

const SIZE_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB']

/** Decimal units, three significant digits: "1.24MB", "5.6kB", "0B" (go-units' HumanSize). */
export function humanSize (bytes: number): string {
  let size = bytes
  let unit = 0
  while (size >= 1000 && unit < SIZE_UNITS.length - 1) {
    size /= 1000
    unit++
  }
  return `${Number(size.toPrecision(3))}${SIZE_UNITS[unit]}`
}

/** "2 minutes ago", "About an hour ago" (go-units' HumanDuration). */
export function timeAgo (iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000))
  const minutes = Math.floor(seconds / 60)
  const hours = Math.floor(seconds / 3600)
  let text: string
  if (seconds < 1) text = 'Less than a second'
  else if (seconds === 1) text = '1 second'
  else if (seconds < 60) text = `${seconds} seconds`
  else if (minutes === 1) text = 'About a minute'
  else if (minutes < 60) text = `${minutes} minutes`
  else if (hours === 1) text = 'About an hour'
  else if (hours < 48) text = `${hours} hours`
  else if (hours < 24 * 7 * 2) text = `${Math.floor(hours / 24)} days`
  else if (hours < 24 * 30 * 2) text = `${Math.floor(hours / 24 / 7)} weeks`
  else if (hours < 24 * 365 * 2) text = `${Math.floor(hours / 24 / 30)} months`
  else text = `${Math.floor(hours / 24 / 365)} years`
  return `${text} ago`
}

/** The 12 hex digits docker shows for an id. */
export function shortId (id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12)
}

export function truncate (text: string, width: number): string {
  return text.length <= width ? text : text.slice(0, width - 1) + '…'
}

/** Columns as docker's tabwriter lays them out: at least 10 wide, 3 spaces of padding. */
export function table (header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(10, ...[h, ...rows.map((r) => r[i] ?? '')].map((c) => c.length + 3)))
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('').trimEnd()
  return [header, ...rows].map(line).join('\n') + '\n'
}

export function json (value: unknown): string {
  return JSON.stringify(value, null, 4) + '\n'
}
