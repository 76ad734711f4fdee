import { resolve } from 'node:path'
import type { Command } from '../command.js'
import { jsonOption } from '../command.js'
import { humanSize, json, table, timeAgo } from '../format.js'
import { withProgress } from '../progress.js'

export const layerCommands: Command[] = [
  {
    words: ['layer', 'import'],
    usage: 'layer import DIR|TAR',
    summary: 'import a directory or a (gzipped) tar as a layer; prints its DiffID',
    args: { min: 1, max: 1 },
    async run (ctx) {
      const result = await withProgress(async (onProgress) => await ctx.client().importLayer(resolve(ctx.args[0]!), onProgress))
      ctx.out(result.diffId + '\n')
    }
  },
  {
    words: ['layer', 'ls'],
    usage: 'layer ls [--json]',
    summary: 'list stored layers',
    options: jsonOption,
    args: { min: 0, max: 0 },
    async run (ctx) {
      const layers = await ctx.client().layers()
      layers.sort((a, b) => b.created.localeCompare(a.created))
      if (ctx.opts.json === true) return ctx.out(json(layers))
      ctx.out(table(['LAYER', 'CREATED', 'SIZE', 'SOURCE'], layers.map((l) => [l.diffId, timeAgo(l.created), humanSize(l.size), l.source])))
    }
  }
]
