import { UsageError } from './command.js'
import { runOverlay } from './overlay.js'

/** The entry of `stratafs-overlay` (mount.fuse / podman mount_program) and of its background child. */
runOverlay(process.argv.slice(2)).then(code => process.exit(code), (err: Error) => {
  process.stderr.write(`stratafs-overlay: ${err.message}\n`)
  process.exit(err instanceof UsageError ? 2 : 1)
})
