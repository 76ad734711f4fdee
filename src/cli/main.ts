import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Client } from '../client/client.js'
import { StrataError } from '../errors.js'
import { UsageError, type Command, type OptionSpec, type OptionValues } from './command.js'
import { commands } from './commands/index.js'
import { OVERLAY_USAGE, runOverlay } from './overlay.js'

const DEFAULT_ROOT = '/var/lib/stratafs'

const globalOptions: Record<string, OptionSpec> = {
  root: { type: 'string' },
  socket: { type: 'string' },
  help: { type: 'boolean', short: 'h' }
}

function usage (): string {
  const width = Math.max(...commands.map((c) => c.usage.length))
  return [
    'usage: stratafs COMMAND [ARGS] [--root DIR] [--socket PATH]',
    '',
    ...commands.map((c) => `  ${c.usage.padEnd(width)}  ${c.summary}`),
    `  ${OVERLAY_USAGE.replace('usage: stratafs ', '')}`,
    '      mount plain directories with no daemon, as fuse-overlayfs does',
    '',
    `The root is --root, else $STRATAFS_ROOT, else ${DEFAULT_ROOT}; the socket defaults to <root>/stratafs.sock.`
  ].join('\n') + '\n'
}

/** The command named by the leading words of argv (global options may come first). */
function findCommand (argv: string[]): Command | undefined {
  const words: string[] = []
  for (let i = 0; i < argv.length && words.length < 2; i++) {
    const a = argv[i]!
    if (a === '--root' || a === '--socket') { i++; continue }
    if (a.startsWith('-')) continue
    words.push(a)
  }
  return commands
    .filter((c) => c.words.every((w, i) => words[i] === w))
    .sort((a, b) => b.words.length - a.words.length)[0]
}

export async function main (argv: string[]): Promise<number> {
  // fuse-overlayfs's command line (`-o lowerdir=…`), which parseArgs cannot take.
  if (argv[0] === 'overlay') return await runOverlay(argv.slice(1))
  const command = findCommand(argv)
  if (command === undefined) {
    if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(usage())
      return 0
    }
    throw new UsageError(`unknown command: ${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}`)
  }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: { ...globalOptions, ...command.options }, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError(`${(err as Error).message.split('\n')[0]!.replace(/\. To specify.*$/, '')} (usage: stratafs ${command.usage})`)
  }
  const opts = parsed.values as OptionValues
  if (opts.help === true) {
    process.stdout.write(`usage: stratafs ${command.usage}\n${command.summary}\n`)
    return 0
  }
  const args = parsed.positionals.slice(command.words.length)
  if (args.length < command.args.min || (command.args.max !== undefined && args.length > command.args.max)) {
    throw new UsageError(`usage: stratafs ${command.usage}`)
  }
  const root = typeof opts.root === 'string' ? opts.root : process.env.STRATAFS_ROOT ?? DEFAULT_ROOT
  const socket = typeof opts.socket === 'string' ? opts.socket : join(root, 'stratafs.sock')
  let client: Client | undefined
  await command.run({
    args,
    opts,
    root,
    socket,
    client: () => (client ??= new Client(socket)),
    out: (text) => { process.stdout.write(text) }
  })
  return 0
}

/** One line on stderr per failure, never a stack: 2 for usage errors, 1 for the rest. */
function fail (err: unknown): number {
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`stratafs: ${message}\n`)
  if (err instanceof UsageError) return 2
  if (!(err instanceof StrataError) && process.env.STRATAFS_DEBUG !== undefined) console.error(err)
  return 1
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code },
  (err: unknown) => { process.exitCode = fail(err) }
)
