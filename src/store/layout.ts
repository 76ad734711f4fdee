import { join } from 'node:path'

/**
 * Where things live under a stratafs root. Layer directories are named by the DiffID's hex so a
 * path never needs escaping and two imports of the same content land on the same name.
 */
export class RootLayout {
  readonly root: string
  readonly dbDir: string
  readonly layersDir: string
  readonly containersDir: string
  readonly tmpDir: string

  constructor (root: string) {
    this.root = root
    this.dbDir = join(root, 'db')
    this.layersDir = join(root, 'layers')
    this.containersDir = join(root, 'containers')
    this.tmpDir = join(root, 'tmp')
  }

  layerDir (diffId: string): string {
    return join(this.layersDir, diffId.replace(/^sha256:/, ''))
  }

  containerDir (id: string): string {
    return join(this.containersDir, id)
  }

  upperDir (id: string): string {
    return join(this.containersDir, id, 'upper')
  }

  workDir (id: string): string {
    return join(this.containersDir, id, 'work')
  }
}
