import type { Command } from '../command.js'
import { benchCommands } from './bench.js'
import { containerCommands } from './container.js'
import { daemonCommands } from './daemon.js'
import { imageCommands } from './image.js'
import { imageImportCommands } from './image-import.js'
import { layerCommands } from './layer.js'

/** Every command group; a new group is one file and one line here. */
export const commands: Command[] = [
  ...daemonCommands,
  ...layerCommands,
  ...imageCommands,
  ...imageImportCommands,
  ...containerCommands,
  ...benchCommands
]
