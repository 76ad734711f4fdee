import { randomBytes } from 'node:crypto'
import { mkdir, rename, rm, stat } from 'node:fs/promises'
import type { AbstractSublevel } from 'abstract-level'
import type { Level } from 'level'
import { StrataError } from '../errors.js'
import { chainIds, sha256Hex } from '../layers/digest.js'
import type { Logger } from '../log.js'
import { imageId, type ImageConfig } from './image-config.js'
import { IndexTable } from './index-table.js'
import { RootLayout } from './layout.js'
import { generateName, isValidName } from './names.js'
import { openDb } from './open-db.js'
import type { ChainRecord, ContainerRecord, ImageRecord, LayerRecord, RemovedImage } from './records.js'
import { looksLikeTag, normalizeTag } from './refs.js'

type Db = Level<string, unknown>
type Sub<V> = AbstractSublevel<Db, string | Buffer | Uint8Array, string, V>

/** Imported layer content staged under `<root>/tmp`, as `importLayer` leaves it. */
export interface StagedLayer { diffId: string; size: number; dir: string }

const hexRe = /^(?:sha256:)?[0-9a-f]{1,64}$/

/**
 * The only code that touches LevelDB. Public methods validate and throw StrataError; `_methods`
 * do the work. Mutations run one at a time (`_exclusive`) so a `tag` cannot interleave with the
 * `rm` of the same image across an await.
 */
export class Store {
  readonly layout: RootLayout
  private readonly db: Level<string, unknown>
  private readonly layersDb: Sub<LayerRecord>
  private readonly imagesDb: Sub<ImageConfig>
  /** Configs as another tool serialized them, by the image ID that is their digest. */
  private readonly configBytesDb: Sub<string>
  private readonly tagsDb: Sub<string>
  private readonly chains: IndexTable
  private readonly containersDb: Sub<ContainerRecord>
  private readonly log: Logger | undefined
  private queue: Promise<unknown> = Promise.resolve()

  private constructor (layout: RootLayout, db: Level<string, unknown>, log?: Logger) {
    this.layout = layout
    this.db = db
    this.log = log
    const sub = <V>(name: string): Sub<V> => db.sublevel<string, V>(name, { valueEncoding: 'json' })
    this.layersDb = sub('layers')
    this.imagesDb = sub('images')
    this.configBytesDb = sub('config-bytes')
    this.tagsDb = sub('tags')
    this.chains = new IndexTable(db)
    this.containersDb = sub('containers')
  }

  /** Opens (creating) a root. A root held by another process → STORE_LOCKED. */
  static async open (root: string, log?: Logger): Promise<Store> {
    const layout = new RootLayout(root)
    await mkdir(root, { recursive: true, mode: 0o700 })
    const db = await openDb(layout.dbDir, `another stratafs daemon is using ${root} (its store is locked)`)
    // Staging from an interrupted import is garbage once nobody else holds the root.
    await rm(layout.tmpDir, { recursive: true, force: true })
    await Promise.all([layout.tmpDir, layout.layersDir, layout.containersDir].map((d) => mkdir(d, { recursive: true, mode: 0o700 })))
    return new Store(layout, db, log?.child({ sub: 'store' }))
  }

  async close (): Promise<void> {
    await this.queue.catch(() => {})
    await this.db.close()
  }

  // ---- layers ----

  /**
   * Moves a staged import into `<root>/layers/<hex>`, or discards it when that layer is stored
   * already: layers are stored once however many images use them.
   */
  async addLayer (staged: StagedLayer, source: string): Promise<{ layer: LayerRecord; existed: boolean }> {
    if (!/^sha256:[0-9a-f]{64}$/.test(staged.diffId)) throw new StrataError('BAD_REQUEST', `not a DiffID: ${staged.diffId}`)
    return this._exclusive(() => this._addLayer(staged, source))
  }

  private async _addLayer (staged: StagedLayer, source: string): Promise<{ layer: LayerRecord; existed: boolean }> {
    const known = await this.layersDb.get(staged.diffId)
    const dir = this.layout.layerDir(staged.diffId)
    const present = await stat(dir).then(() => true, () => false)
    if (known !== undefined && present) {
      await rm(staged.dir, { recursive: true, force: true })
      return { layer: known, existed: true }
    }
    if (present) await rm(dir, { recursive: true, force: true })
    await rename(staged.dir, dir)
    const layer: LayerRecord = { diffId: staged.diffId, size: staged.size, created: new Date().toISOString(), source }
    await this.layersDb.put(layer.diffId, layer)
    this.log?.info({ diffId: layer.diffId, size: layer.size }, 'layer stored')
    return { layer, existed: false }
  }

  async layer (diffId: string): Promise<LayerRecord> {
    const layer = await this.layersDb.get(diffId)
    if (layer === undefined) throw new StrataError('NOT_FOUND', `no such layer: ${diffId}`)
    return layer
  }

  async hasLayer (diffId: string): Promise<boolean> {
    return (await this.layersDb.get(diffId)) !== undefined
  }

  async layers (): Promise<LayerRecord[]> {
    return this._values(this.layersDb)
  }

  layerDir (diffId: string): string {
    return this.layout.layerDir(diffId)
  }

  // ---- images ----

  /**
   * `configBytes` is the config as an archive held it, `config` parsed from it: the ID is then
   * the bytes' sha256, the ID docker and registries know the image by, and the bytes are kept so
   * the image can be handed on unchanged.
   */
  async createImage (config: ImageConfig, tags: string[] = [], configBytes?: Buffer): Promise<ImageRecord> {
    if (config.rootfs?.type !== 'layers' || !Array.isArray(config.rootfs.diff_ids)) {
      throw new StrataError('BAD_REQUEST', 'image config needs rootfs {type: "layers", diff_ids}')
    }
    const normalized = tags.map(normalizeTag)
    return this._exclusive(async () => {
      for (const d of config.rootfs.diff_ids) {
        if (!await this.hasLayer(d)) throw new StrataError('NOT_FOUND', `no such layer: ${d}`)
      }
      return this._createImage(config, normalized, configBytes)
    })
  }

  private async _createImage (config: ImageConfig, tags: string[], configBytes?: Buffer): Promise<ImageRecord> {
    const id = configBytes === undefined ? imageId(config) : `sha256:${sha256Hex(configBytes)}`
    if (await this.imagesDb.get(id) === undefined) {
      if (configBytes !== undefined) await this.configBytesDb.put(id, configBytes.toString('utf8'))
      await this.imagesDb.put(id, config)
    }
    for (const tag of tags) await this.tagsDb.put(tag, id)
    this.log?.info({ id, tags }, 'image stored')
    return { id, config }
  }

  async image (id: string): Promise<ImageRecord> {
    const config = await this.imagesDb.get(id)
    if (config === undefined) throw new StrataError('NOT_FOUND', `no such image: ${id}`)
    return { id, config }
  }

  async images (): Promise<Array<ImageRecord & { tags: string[] }>> {
    const tags = await this._tagsById()
    const out: Array<ImageRecord & { tags: string[] }> = []
    for await (const [id, config] of this.imagesDb.iterator()) out.push({ id, config, tags: tags.get(id) ?? [] })
    return out
  }

  async tagsOf (id: string): Promise<string[]> {
    return (await this._tagsById()).get(id) ?? []
  }

  /** Sum of the image's layer sizes; a layer listed twice counts once, as it is stored once. */
  async imageSize (image: ImageRecord): Promise<number> {
    let size = 0
    for (const d of new Set(image.config.rootfs.diff_ids)) size += (await this.layersDb.get(d))?.size ?? 0
    return size
  }

  /** Full id, `name[:tag]`, or a unique id prefix (with or without `sha256:`). */
  async resolveImage (ref: string): Promise<ImageRecord> {
    if (typeof ref !== 'string' || ref === '') throw new StrataError('BAD_REQUEST', 'an image reference is required')
    const full = ref.startsWith('sha256:') ? ref : `sha256:${ref}`
    if (/^sha256:[0-9a-f]{64}$/.test(full)) {
      const config = await this.imagesDb.get(full)
      if (config !== undefined) return { id: full, config }
    }
    if (looksLikeTag(ref)) {
      const id = await this.tagsDb.get(normalizeTag(ref))
      if (id !== undefined) return this.image(id)
    }
    if (hexRe.test(ref)) {
      const matches: string[] = []
      for await (const id of this.imagesDb.keys({ gte: full, lt: full + '\uffff' })) matches.push(id)
      if (matches.length === 1) return this.image(matches[0]!)
      if (matches.length > 1) throw new StrataError('BAD_REQUEST', `ambiguous image id prefix ${ref}: matches ${matches.length} images`)
    }
    throw new StrataError('NOT_FOUND', `no such image: ${ref}`)
  }

  async tag (ref: string, newTag: string): Promise<string> {
    const tag = normalizeTag(newTag)
    return this._exclusive(async () => {
      const image = await this.resolveImage(ref)
      await this.tagsDb.put(tag, image.id)
      return tag
    })
  }

  /**
   * Given by a tag while other tags point at the same image: removes that tag only. Otherwise
   * removes the image and every tag of it, then the layers and chain indexes nothing uses any more.
   * Refused while a container uses the image, unless `force`.
   */
  async removeImage (ref: string, force = false): Promise<RemovedImage> {
    return this._exclusive(() => this._removeImage(ref, force))
  }

  private async _removeImage (ref: string, force: boolean): Promise<RemovedImage> {
    const image = await this.resolveImage(ref)
    const tags = await this.tagsOf(image.id)
    const byTag = looksLikeTag(ref) && tags.includes(normalizeTag(ref))
    if (byTag && tags.length > 1) {
      await this.tagsDb.del(normalizeTag(ref))
      return { untagged: [normalizeTag(ref)], deleted: [], layersDeleted: [] }
    }
    const users = (await this.containers()).filter((c) => c.imageId === image.id)
    if (users.length > 0 && !force) {
      throw new StrataError('CONFLICT', `image ${ref} is used by container ${users.map((c) => c.name).join(', ')} (remove it first, or use --force)`)
    }
    await this.db.batch([
      ...tags.map((t) => ({ type: 'del' as const, key: t, sublevel: this.tagsDb })),
      { type: 'del' as const, key: image.id, sublevel: this.imagesDb },
      { type: 'del' as const, key: image.id, sublevel: this.configBytesDb }
    ])
    const layersDeleted = await this._collectGarbage()
    this.log?.info({ id: image.id, tags, layersDeleted }, 'image removed')
    return { untagged: tags, deleted: [image.id], layersDeleted }
  }

  /** Deletes layers and chain indexes that no image nor container stacks on. */
  private async _collectGarbage (): Promise<string[]> {
    const keepLayers = new Set<string>()
    const keepChains = new Set<string>()
    const stacks = [
      ...(await this._values(this.imagesDb)).map((c) => c.rootfs.diff_ids),
      ...(await this.containers()).map((c) => c.diffIds)
    ]
    for (const diffIds of stacks) {
      for (const d of diffIds) keepLayers.add(d)
      for (const c of chainIds(diffIds)) keepChains.add(c)
    }
    for await (const chainId of this.chains.keys()) {
      if (!keepChains.has(chainId)) await this.chains.drop(chainId)
    }
    const deleted: string[] = []
    for (const layer of await this.layers()) {
      if (keepLayers.has(layer.diffId)) continue
      await this.layersDb.del(layer.diffId)
      await rm(this.layout.layerDir(layer.diffId), { recursive: true, force: true })
      deleted.push(layer.diffId)
    }
    return deleted
  }

  // ---- chain indexes ----

  async hasChainIndex (chainId: string): Promise<boolean> {
    return this.chains.has(chainId)
  }

  /** Persists the merged view of a layer stack under its ChainID. */
  async putChainIndex<E> (chainId: string, records: Iterable<ChainRecord<E>>): Promise<number> {
    return this._exclusive(async () => {
      const n = await this.chains.put(chainId, records)
      this.log?.debug({ chainId, records: n }, 'chain index stored')
      return n
    })
  }

  /** Every record of a chain index, in batches of whole directories. */
  chainIndex<E> (chainId: string): AsyncIterable<Array<ChainRecord<E>>> {
    return this.chains.get<E>(chainId)
  }

  // ---- containers ----

  async createContainer (opts: { name?: string; image: ImageRecord; readOnly: boolean }): Promise<ContainerRecord> {
    if (opts.name !== undefined && !isValidName(opts.name)) {
      throw new StrataError('BAD_REQUEST', `invalid container name ${JSON.stringify(opts.name)}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*`)
    }
    return this._exclusive(async () => {
      const all = await this.containers()
      const names = new Set(all.map((c) => c.name))
      if (opts.name !== undefined && names.has(opts.name)) throw new StrataError('CONFLICT', `container name ${opts.name} is already in use`)
      const record: ContainerRecord = {
        id: randomBytes(32).toString('hex'),
        name: opts.name ?? generateName((n) => names.has(n)),
        imageId: opts.image.id,
        diffIds: [...opts.image.config.rootfs.diff_ids],
        created: new Date().toISOString(),
        readOnly: opts.readOnly
      }
      if (!record.readOnly) {
        await mkdir(this.layout.upperDir(record.id), { recursive: true, mode: 0o755 })
        await mkdir(this.layout.workDir(record.id), { recursive: true, mode: 0o700 })
      }
      await this.containersDb.put(record.id, record)
      return record
    })
  }

  async updateContainer (record: ContainerRecord): Promise<void> {
    return this._exclusive(async () => {
      if (await this.containersDb.get(record.id) === undefined) throw new StrataError('NOT_FOUND', `no such container: ${record.name}`)
      await this.containersDb.put(record.id, record)
    })
  }

  async containers (): Promise<ContainerRecord[]> {
    return this._values(this.containersDb)
  }

  /** Full id, name, or unique id prefix. */
  async resolveContainer (ref: string): Promise<ContainerRecord> {
    if (typeof ref !== 'string' || ref === '') throw new StrataError('BAD_REQUEST', 'a container reference is required')
    const all = await this.containers()
    const exact = all.find((c) => c.id === ref || c.name === ref)
    if (exact !== undefined) return exact
    const prefixed = /^[0-9a-f]+$/.test(ref) ? all.filter((c) => c.id.startsWith(ref)) : []
    if (prefixed.length === 1) return prefixed[0]!
    if (prefixed.length > 1) throw new StrataError('BAD_REQUEST', `ambiguous container id prefix ${ref}`)
    throw new StrataError('NOT_FOUND', `no such container: ${ref}`)
  }

  /** Deletes the record and the container's upper and work dirs, then unused layers. */
  async removeContainer (id: string): Promise<void> {
    return this._exclusive(async () => {
      const record = await this.containersDb.get(id)
      if (record === undefined) throw new StrataError('NOT_FOUND', `no such container: ${id}`)
      if (record.mountpoint !== undefined) throw new StrataError('CONFLICT', `container ${record.name} is mounted on ${record.mountpoint}`)
      await this.containersDb.del(id)
      await rm(this.layout.containerDir(id), { recursive: true, force: true })
      await this._collectGarbage()
    })
  }

  // ---- helpers ----

  private async _values<V> (sub: Sub<V>): Promise<V[]> {
    const out: V[] = []
    for await (const v of sub.values()) out.push(v)
    return out
  }

  private async _tagsById (): Promise<Map<string, string[]>> {
    const byId = new Map<string, string[]>()
    for await (const [tag, id] of this.tagsDb.iterator()) {
      const list = byId.get(id) ?? []
      list.push(tag)
      byId.set(id, list)
    }
    return byId
  }

  private _exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return run
  }
}

