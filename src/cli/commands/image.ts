import { resolve } from 'node:path'
import { isDigest } from '../../layers/digest.js'
import type { Command } from '../command.js'
import { jsonOption } from '../command.js'
import { humanSize, json, shortId, table, timeAgo, truncate } from '../format.js'
import { withProgress } from '../progress.js'

const list = (v: unknown): string[] | undefined => (Array.isArray(v) ? v as string[] : undefined)
const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)

export const imageCommands: Command[] = [
  {
    words: ['image', 'create'],
    usage: 'image create NAME:TAG LAYER... [--env K=V]... [--cmd CMD] [--workdir D] [--label K=V]... [--created-by S]',
    summary: 'make an image from layers, bottom first (a DiffID, a directory or a tar)',
    options: {
      env: { type: 'string', multiple: true, short: 'e' },
      cmd: { type: 'string' },
      workdir: { type: 'string', short: 'w' },
      label: { type: 'string', multiple: true, short: 'l' },
      'created-by': { type: 'string' }
    },
    args: { min: 2 },
    async run (ctx) {
      const [tag, ...layers] = ctx.args
      const result = await withProgress(async (onProgress) => await ctx.client().createImage({
        tag: tag!,
        layers: layers.map((l) => (isDigest(l) ? l : resolve(l))),
        env: list(ctx.opts.env),
        cmd: text(ctx.opts.cmd),
        workdir: text(ctx.opts.workdir),
        labels: list(ctx.opts.label),
        createdBy: text(ctx.opts['created-by'])
      }, onProgress))
      ctx.out(result.id + '\n')
    }
  },
  {
    words: ['image', 'ls'],
    usage: 'image ls [--json]',
    summary: 'list images',
    options: jsonOption,
    args: { min: 0, max: 0 },
    async run (ctx) {
      const images = await ctx.client().images()
      const rows = images.flatMap((img) => {
        const tags = img.repoTags.length > 0 ? img.repoTags : ['<none>:<none>']
        return tags.map((t) => {
          const cut = t.lastIndexOf(':')
          return { Repository: t.slice(0, cut), Tag: t.slice(cut + 1), ID: img.id, Created: img.created, Size: img.size }
        })
      })
      if (ctx.opts.json === true) return ctx.out(json(rows))
      ctx.out(table(['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'],
        rows.map((r) => [r.Repository, r.Tag, shortId(r.ID), timeAgo(r.Created), humanSize(r.Size)])))
    }
  },
  {
    words: ['image', 'history'],
    usage: 'image history IMG [--json] [--no-trunc]',
    summary: 'show the build steps of an image, newest first',
    options: { ...jsonOption, 'no-trunc': { type: 'boolean' } },
    args: { min: 1, max: 1 },
    async run (ctx) {
      const items = await ctx.client().imageHistory(ctx.args[0]!)
      if (ctx.opts.json === true) return ctx.out(json(items))
      const full = ctx.opts['no-trunc'] === true
      ctx.out(table(['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'], items.map((h) => [
        h.image === '<missing>' ? h.image : full ? h.image : shortId(h.image),
        timeAgo(h.created),
        full ? h.created_by ?? '' : truncate(h.created_by ?? '', 45),
        humanSize(h.size),
        h.comment ?? ''
      ])))
    }
  },
  {
    words: ['image', 'inspect'],
    usage: 'image inspect IMG',
    summary: 'show an image as docker inspect does (JSON)',
    args: { min: 1, max: 1 },
    async run (ctx) {
      ctx.out(json(await ctx.client().inspectImage(ctx.args[0]!)))
    }
  },
  {
    words: ['image', 'rm'],
    usage: 'image rm IMG [--force]',
    summary: 'remove a tag, or an image and the layers nothing else uses',
    options: { force: { type: 'boolean', short: 'f' } },
    args: { min: 1, max: 1 },
    async run (ctx) {
      const removed = await ctx.client().removeImage(ctx.args[0]!, ctx.opts.force === true)
      for (const t of removed.untagged) ctx.out(`Untagged: ${t}\n`)
      for (const id of removed.deleted) ctx.out(`Deleted: ${id}\n`)
      for (const d of removed.layersDeleted) ctx.out(`Deleted layer: ${d}\n`)
    }
  },
  {
    words: ['image', 'tag'],
    usage: 'image tag IMG NAME:TAG',
    summary: 'add a tag to an image',
    args: { min: 2, max: 2 },
    async run (ctx) {
      await ctx.client().tagImage(ctx.args[0]!, ctx.args[1]!)
    }
  }
]
