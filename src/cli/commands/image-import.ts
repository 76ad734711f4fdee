import { resolve } from 'node:path'
import type { Command } from '../command.js'
import { jsonOption } from '../command.js'
import { json } from '../format.js'
import { progressBar } from '../progress.js'

export const imageImportCommands: Command[] = [
  {
    words: ['image', 'import'],
    usage: 'image import PATH [--tag NAME:TAG] [--json]',
    summary: 'import an OCI image layout or a `docker save` archive (directory, tar or tar.gz)',
    options: { ...jsonOption, tag: { type: 'string', short: 't' } },
    args: { min: 1, max: 1 },
    async run (ctx) {
      const bar = progressBar()
      try {
        const result = await ctx.client().importImage({
          path: resolve(ctx.args[0]!),
          tag: typeof ctx.opts.tag === 'string' ? ctx.opts.tag : undefined
        }, bar.onProgress)
        bar.stop()
        if (ctx.opts.json === true) return ctx.out(json(result.images))
        // docker load's lines, which scripts already parse.
        for (const image of result.images) {
          if (image.tags.length === 0) ctx.out(`Loaded image ID: ${image.id}\n`)
          for (const tag of image.tags) ctx.out(`Loaded image: ${tag}\n`)
        }
      } finally {
        bar.stop()
      }
    }
  }
]
