import type { Client } from '../client/client.js'

export type OptionSpec = { type: 'string' | 'boolean'; multiple?: boolean; short?: string }

export type OptionValues = Record<string, string | boolean | string[] | undefined>

export interface CommandContext {
  /** Positional arguments after the command words. */
  args: string[]
  opts: OptionValues
  root: string
  socket: string
  /** A client of the daemon at `socket`. */
  client (): Client
  out (text: string): void
}

/**
 * One CLI command. `words` is what the user types before the arguments (`['image', 'ls']`).
 * A command group is a file exporting a list of these; `commands/index.ts` collects the groups.
 */
export interface Command {
  words: string[]
  usage: string
  summary: string
  options?: Record<string, OptionSpec>
  args: { min: number; max?: number }
  run (ctx: CommandContext): Promise<void>
}

/** Wrong invocation: exit status 2, as most Unix tools use for usage errors. */
export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

export const jsonOption: Record<string, OptionSpec> = { json: { type: 'boolean' } }
