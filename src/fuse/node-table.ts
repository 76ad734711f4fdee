import type { Attr } from '../overlay/attr.js'

export const ROOT_ID = 1

/** What the kernel knows as one inode: a name in a directory, as libfuse's high-level API keeps it. */
export interface Node {
  readonly id: number
  parent: Node | undefined
  name: string
  /** False once the name is gone (unlinked, replaced by a rename): no path reaches it. */
  attached: boolean
  /** Lookups the kernel has not yet forgotten. */
  lookups: number
  /** Files open through it; a name removed while open is hidden instead (see operations.ts). */
  opens: number
  /**
   * Unlinked while open: the key it is known by until its last close, whatever happens to the
   * directory it was in.
   */
  hidden: string | undefined
  /**
   * The kernel may keep the pages it holds for this file at the next open: nothing seen since the
   * last open changed its mtime or size (libfuse's auto_cache).
   */
  cacheValid: boolean
  /**
   * The file the kernel reads and writes this node's passthrough opens through, and how many
   * such opens are left: the kernel takes one backing file per inode at a time.
   */
  backing: Backing | undefined
  /** Its named children the kernel knows, by name: a directory's part of the table. */
  children: Map<string, Node> | undefined
  /** The inode number of the file, as the last answer about it said. */
  ino: number
  mtime: number
  mtimeNs: number
  size: number
}

export interface Backing {
  /** The kernel's id for it. */
  id: number
  /** Which file it is, as the overlay names open files (see Overlay.fileOf). */
  file: string
  opens: number
}

/**
 * The kernel's node ids ↔ paths. A node is found by its parent and name; its path is rebuilt from
 * its parents, so renaming a directory moves everything under it at no cost.
 */
export class NodeTable {
  private readonly byId = new Map<number, Node>()
  private nextId = ROOT_ID + 1

  constructor () {
    this.byId.set(ROOT_ID, newNode(ROOT_ID, undefined, ''))
  }

  get (id: number): Node | undefined {
    return this.byId.get(id)
  }

  child (parent: Node, name: string): Node | undefined {
    return parent.children?.get(name)
  }

  /** The node of a name, made if the kernel has none yet. */
  add (parent: Node, name: string): Node {
    parent.children ??= new Map()
    let node = parent.children.get(name)
    if (node === undefined) {
      node = newNode(this.nextId++, parent, name)
      this.byId.set(node.id, node)
      parent.children.set(name, node)
    }
    return node
  }

  /** undefined for a node whose name is gone. */
  path (node: Node): string | undefined {
    if (node.hidden !== undefined) return node.hidden
    if (node.id === ROOT_ID) return '/'
    let path = ''
    for (let n: Node | undefined = node; n !== undefined && n.id !== ROOT_ID; n = n.parent) {
      if (!n.attached) return undefined
      path = '/' + n.name + path
    }
    return path
  }

  childPath (parent: Node, name: string): string | undefined {
    const dir = this.path(parent)
    if (dir === undefined) return undefined
    return dir === '/' ? '/' + name : dir + '/' + name
  }

  forget (id: number, lookups: number): void {
    const node = this.byId.get(id)
    if (node === undefined || id === ROOT_ID) return
    node.lookups -= lookups
    if (node.lookups > 0) return
    this.byId.delete(id)
    this.detach(node)
  }

  /** The name is gone; the node lives on for the kernel until forgotten. */
  detach (node: Node): void {
    if (!node.attached) return
    node.attached = false
    const siblings = node.parent!.children!
    if (siblings.get(node.name) === node) siblings.delete(node.name)
  }

  /** A rename: whatever had the new name loses it. */
  move (node: Node, parent: Node, name: string): void {
    const replaced = this.child(parent, name)
    if (replaced !== undefined && replaced !== node) this.detach(replaced)
    this.detach(node)
    node.parent = parent
    node.name = name
    node.attached = true
    parent.children ??= new Map()
    parent.children.set(name, node)
  }

  /** A RENAME_EXCHANGE: each node takes the other's name, either may be unknown. */
  exchange (a: { parent: Node, name: string }, b: { parent: Node, name: string }): void {
    const nodeA = this.child(a.parent, a.name)
    const nodeB = this.child(b.parent, b.name)
    if (nodeA !== undefined) this.detach(nodeA)
    if (nodeB !== undefined) this.move(nodeB, a.parent, a.name)
    if (nodeA !== undefined) this.move(nodeA, b.parent, b.name)
  }

  /**
   * A file removed while open loses its name but stays reachable by a key until its last close:
   * with a NUL in it, no path a user makes can ever be it (libfuse's `.fuse_hidden*` names can).
   */
  hiddenKey (node: Node): string {
    return `\0hidden-${node.id}`
  }

  hide (node: Node): void {
    this.detach(node)
    node.hidden = this.hiddenKey(node)
  }

  /** Notes what an answer said of a node; a changed mtime or size means its cached pages are stale. */
  saw (node: Node, attr: Attr): void {
    node.ino = attr.ino
    if (node.mtime !== attr.mtime[0] || node.mtimeNs !== attr.mtime[1] || node.size !== attr.size) {
      node.cacheValid = false
      node.mtime = attr.mtime[0]
      node.mtimeNs = attr.mtime[1]
      node.size = attr.size
    }
  }
}

function newNode (id: number, parent: Node | undefined, name: string): Node {
  return { id, parent, name, attached: true, lookups: 0, opens: 0, hidden: undefined, cacheValid: false, backing: undefined, children: undefined, ino: -1, mtime: -1, mtimeNs: -1, size: -1 }
}
