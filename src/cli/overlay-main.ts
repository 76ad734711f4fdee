import { UsageError } from './command.js'
import { runOverlay, tell } from './overlay.js'

/** The server of `stratafs-overlay` (mount.fuse / podman mount_program), in the foreground or started by its launcher. */
const argv = process.argv.slice(2)
runOverlay(argv).then(code => process.exit(code), (err: Error) => {
  tell(argv, err.message)
  process.exit(err instanceof UsageError ? 2 : 1)
})
