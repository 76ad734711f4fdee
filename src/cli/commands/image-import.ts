import { resolve } from 'node:path'
import type { Command } from '../command.js'
import { jsonOption } from '../command.js'
import { json } from '../format.js'
import { withProgress } from '../progress.js'

export const imageImportCommands: Command[] = [
  {
    words: ['image', 'import'],
    usage: 'image import PATH [--tag NAME:TAG] [--json]',
    summary: 'import an OCI image layout or a `docker save` archive (directory, tar or tar.gz)',
    options: { ...jsonOption, tag: { type: 'string', short: 't' } },
    args: { min: 1, max: 1 },
    async run (ctx) {
      const result = await withProgress(async (onProgress) => await ctx.client().importImage({
        path: resolve(ctx.args[0]!),
        tag: typeof ctx.opts.tag === 'string' ? ctx.opts.tag : undefined
      }, onProgress))
      if (ctx.opts.json === true) return ctx.out(json(result.images))
      // docker load's lines, which scripts already parse.
      for (const image of result.images) {
        if (image.tags.length === 0) ctx.out(`Loaded image ID: ${image.id}\n`)
        for (const tag of image.tags) ctx.out(`Loaded image: ${tag}\n`)
      }
    }
  }
]
