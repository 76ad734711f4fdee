import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Command } from '../command.js'
import { jsonOption } from '../command.js'
import { json, shortId, table } from '../format.js'
import { withProgress } from '../progress.js'

/** A path if it looks like one or names something here, else a container name or id. */
function mountTarget (arg: string): string {
  return arg.includes('/') || arg === '.' || arg === '..' || existsSync(arg) ? resolve(arg) : arg
}

export const containerCommands: Command[] = [
  {
    words: ['mount'],
    usage: 'mount IMG MOUNTPOINT [--name C] [--read-only]',
    summary: 'mount an image; writable mounts get a container holding the changes',
    options: { name: { type: 'string' }, 'read-only': { type: 'boolean' } },
    args: { min: 2, max: 2 },
    async run (ctx) {
      const c = await ctx.client().mount({
        image: ctx.args[0]!,
        mountpoint: resolve(ctx.args[1]!),
        name: typeof ctx.opts.name === 'string' ? ctx.opts.name : undefined,
        readOnly: ctx.opts['read-only'] === true
      })
      ctx.out(c.name + '\n')
    }
  },
  {
    words: ['umount'],
    usage: 'umount MOUNTPOINT|C',
    summary: 'unmount; the container keeps its changes',
    args: { min: 1, max: 1 },
    async run (ctx) {
      await ctx.client().unmount(mountTarget(ctx.args[0]!))
    }
  },
  {
    words: ['ps'],
    usage: 'ps [--json]',
    summary: 'list containers and their mounts',
    options: jsonOption,
    args: { min: 0, max: 0 },
    async run (ctx) {
      const list = await ctx.client().containers()
      if (ctx.opts.json === true) return ctx.out(json(list))
      ctx.out(table(['CONTAINER ID', 'IMAGE', 'NAME', 'MOUNTPOINT', 'STATUS'], list.map((c) => [
        shortId(c.id), c.image, c.name, c.mountpoint ?? '-', c.status === 'mounted' && c.readOnly ? 'mounted (read-only)' : c.status
      ])))
    }
  },
  {
    words: ['diff'],
    usage: 'diff C [--json]',
    summary: 'changes of a container against its image (A added, C changed, D deleted)',
    options: jsonOption,
    args: { min: 1, max: 1 },
    async run (ctx) {
      const changes = await ctx.client().diff(ctx.args[0]!)
      if (ctx.opts.json === true) return ctx.out(json(changes))
      ctx.out(changes.map((c) => `${c.kind} ${c.path}\n`).join(''))
    }
  },
  {
    words: ['commit'],
    usage: 'commit C NAME:TAG [--message M]',
    summary: "make a new image from a container's changes",
    options: { message: { type: 'string', short: 'm' } },
    args: { min: 2, max: 2 },
    async run (ctx) {
      const result = await withProgress(async (onProgress) => await ctx.client().commit({
        container: ctx.args[0]!,
        tag: ctx.args[1]!,
        message: typeof ctx.opts.message === 'string' ? ctx.opts.message : undefined
      }, onProgress))
      ctx.out(result.id + '\n')
    }
  },
  {
    words: ['rm'],
    usage: 'rm C [--force]',
    summary: 'remove a container and its changes (--force unmounts it first)',
    options: { force: { type: 'boolean', short: 'f' } },
    args: { min: 1, max: 1 },
    async run (ctx) {
      const removed = await ctx.client().removeContainer(ctx.args[0]!, ctx.opts.force === true)
      ctx.out(removed.name + '\n')
    }
  }
]
