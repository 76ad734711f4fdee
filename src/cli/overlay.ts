import { spawnSync } from 'node:child_process'
import { closeSync, writeSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { StrataError } from '../errors.js'
import { inInitialUserNamespace } from '../sys/user-namespace.js'
import { IdMapping, IdMappings } from '../fuse/id-mapping.js'
import { UsageError } from './command.js'

export const OVERLAY_USAGE = `usage: stratafs overlay [-f] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W] [SOURCE] MOUNTPOINT`

/** mount(8) flags that mount.fuse passes along: accepted silently, FUSE mounts handle them. */
const MOUNT_FLAGS = new Set([
  'rw', 'dev', 'nodev', 'suid', 'nosuid', 'exec', 'noexec', 'atime', 'noatime', 'relatime',
  'strictatime', 'diratime', 'nodiratime', 'auto', 'noauto', 'user', 'nouser', 'users', 'defaults',
  'async', 'sync', 'allow_other', 'allow_root', 'default_permissions', '_netdev', 'nofail'
])

/** Options with a value that the mount uses. */
const VALUED = new Set([
  'lowerdir', 'upperdir', 'workdir', 'metacopy', 'uidmapping', 'gidmapping', 'fsync', 'squash_to_uid', 'squash_to_gid'
])

/** fuse-overlayfs and kernel overlayfs options that change nothing here: the caller is told. */
const IGNORED = new Set([
  'noacl', 'xattr_permissions', 'static_nlink', 'redirect_dir', 'index', 'xino',
  'timeout', 'threaded', 'plugins', 'context', 'fscontext', 'defcontext', 'rootcontext',
  'nfs_export', 'debug'
])

interface OverlayArgs {
  foreground: boolean
  lowerDirs: string[]
  upperDir?: string
  workDir?: string
  mountpoint: string
  metacopy: boolean
  /** `user.overlay.*` xattrs in place of `trusted.overlay.*`, asked for (see also `needsUserXattrs`). */
  userxattr: boolean
  ids?: IdMappings
  /** Kernel `volatile`, or fuse-overlayfs's `fsync=0`: no syncs reach the upper. */
  volatile: boolean
  ignored: string[]
  readyFd?: number
}

export function parseOverlayArgs (argv: string[]): OverlayArgs {
  let foreground = false
  const options: string[] = []
  const positional: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '-f') foreground = true
    else if (arg === '-o') options.push(argv[++i] ?? '')
    else if (arg.startsWith('-o')) options.push(arg.slice(2))
    else if (arg === '--ready-fd') i++
    else if (arg.startsWith('-')) throw new UsageError(`unknown flag ${arg}\n${OVERLAY_USAGE}`)
    else positional.push(arg)
  }
  if (positional.length < 1 || positional.length > 2) throw new UsageError(OVERLAY_USAGE)
  const values = new Map<string, string>()
  const ignored: string[] = []
  let readOnly = false
  let userxattr = false
  let volatile = false
  for (const item of options.flatMap(o => o.split(','))) {
    if (item === '') continue
    const eq = item.indexOf('=')
    const key = eq < 0 ? item : item.slice(0, eq)
    if (VALUED.has(key)) values.set(key, item.slice(eq + 1))
    else if (key === 'ro') readOnly = true
    else if (key === 'userxattr') userxattr = true
    else if (key === 'volatile') volatile = true
    else if (key === 'squash_to_root') values.set(key, '0')
    else if (MOUNT_FLAGS.has(key)) continue
    else if (IGNORED.has(key)) ignored.push(item)
    else throw new UsageError(`unknown option ${key}\n${OVERLAY_USAGE}`)
  }
  const lower = values.get('lowerdir')
  if (lower === undefined || lower === '') throw new UsageError(`lowerdir= is required\n${OVERLAY_USAGE}`)
  // `ro` makes a read-only view of the lowers, whatever upper was named.
  const upperDir = readOnly ? undefined : values.get('upperdir')
  const workDir = readOnly ? undefined : values.get('workdir')
  if ((upperDir === undefined) !== (workDir === undefined)) {
    throw new UsageError('upperdir= and workdir= go together')
  }
  const metacopy = values.get('metacopy') === 'on'
  // As the kernel: metacopy files would be trusted on xattrs any file's owner can set.
  if (userxattr && metacopy) throw new UsageError('conflicting options: userxattr,metacopy=on')
  return {
    foreground,
    // lowerdir lists the top layer first, as for kernel overlayfs.
    lowerDirs: lower.split(':').filter(d => d !== '').map(d => resolve(d)).reverse(),
    upperDir: upperDir === undefined ? undefined : resolve(upperDir),
    workDir: workDir === undefined ? undefined : resolve(workDir),
    mountpoint: resolve(positional[positional.length - 1]),
    metacopy,
    userxattr,
    ids: idMappingsOf(values),
    volatile: volatile || values.get('fsync') === '0',
    ignored,
    readyFd: readyFdOf(argv)
  }
}

/** uidmapping=, gidmapping= and the squash options, checked here so that a bad one is a usage error. */
function idMappingsOf (values: Map<string, string>): IdMappings | undefined {
  const parse = (option: string): IdMapping | undefined => {
    const spec = values.get(option)
    if (spec === undefined) return undefined
    try {
      return IdMapping.parse(option, spec)
    } catch (err) {
      throw new UsageError((err as Error).message)
    }
  }
  const id = (option: string): number | undefined => {
    const value = values.get(option)
    if (value === undefined) return undefined
    if (!/^\d+$/.test(value) || Number(value) >= 2 ** 32) throw new UsageError(`${option}=${value}: an id is a decimal number`)
    return Number(value)
  }
  const uid = parse('uidmapping')
  const gid = parse('gidmapping')
  // squash_to_uid and squash_to_gid take precedence over squash_to_root, as in fuse-overlayfs.
  const squash = { uid: id('squash_to_uid') ?? id('squash_to_root'), gid: id('squash_to_gid') ?? id('squash_to_root') }
  if (uid === undefined && gid === undefined && squash.uid === undefined && squash.gid === undefined) return undefined
  return new IdMappings(uid, gid, squash)
}

/** The descriptor a background server reports on (`--ready-fd N`), found even in a bad command line. */
export function readyFdOf (argv: string[]): number | undefined {
  const i = argv.indexOf('--ready-fd')
  const fd = i < 0 ? NaN : Number(argv[i + 1])
  return Number.isInteger(fd) && fd > 2 ? fd : undefined
}

/**
 * A line for the person who ran the command. A server started by the launcher has no stderr: it
 * says its lines on the ready descriptor, and the launcher shows them.
 */
export function tell (argv: string[], line: string): void {
  writeSync(readyFdOf(argv) ?? 2, `stratafs-overlay: ${line}\n`)
}

/**
 * `stratafs overlay`: in the foreground it serves until unmounted; otherwise the launcher,
 * `bin/stratafs-overlay`, starts it in the background and returns once the mount answers.
 */
export async function runOverlay (argv: string[]): Promise<number> {
  const args = parseOverlayArgs(argv)
  if (!args.foreground) return startInBackground(argv)
  if (args.ignored.length > 0) tell(argv, `ignoring options: ${args.ignored.join(',')}`)
  const userxattr = args.userxattr || needsUserXattrs(args, argv)
  // Loaded here only: a command line refused costs none of the serving code.
  const [{ createLogger }, { serveStandalone }, { OverlayXattrs }] = await Promise.all([
    import('../log.js'), import('../daemon/standalone-overlay.js'), import('../layers/overlay-xattrs.js')
  ])
  const log = createLogger()
  process.umask(0)
  const served = await serveStandalone({
    lowerDirs: args.lowerDirs,
    upper: args.upperDir !== undefined && args.workDir !== undefined ? { upperDir: args.upperDir, workDir: args.workDir } : undefined,
    mountpoint: args.mountpoint,
    metacopy: args.metacopy,
    xattrs: userxattr ? OverlayXattrs.user : OverlayXattrs.trusted,
    ids: args.ids,
    volatile: args.volatile,
    log
  })
  if (args.readyFd !== undefined) {
    writeSync(args.readyFd, 'READY\n')
    closeSync(args.readyFd)
  }
  await served.done
  return 0
}

/**
 * In a user namespace other than the initial one (a rootless container engine's), `trusted.*`
 * xattrs cannot be written, so opaque directories could not be made: the overlay's own xattrs go
 * under `user.overlay.`, as kernel overlayfs keeps them with `-o userxattr`, and the caller is told.
 */
function needsUserXattrs (args: OverlayArgs, argv: string[]): boolean {
  if (inInitialUserNamespace()) return false
  if (args.metacopy) throw new UsageError('metacopy=on needs trusted.* xattrs, which a process in a user namespace cannot write')
  tell(argv, 'in a user namespace: the overlay\'s xattrs are user.overlay.*, as with -o userxattr')
  return true
}

/** The launcher does it, with the caller's stdio, so that there is one way to go to the background. */
function startInBackground (argv: string[]): number {
  const launcher = fileURLToPath(new URL('../../bin/stratafs-overlay', import.meta.url))
  const r = spawnSync(launcher, argv, { stdio: 'inherit', env: { ...process.env, STRATAFS_NODE: process.execPath } })
  if (r.error !== undefined) throw new StrataError('MOUNT_FAILED', `${launcher}: ${r.error.message}`)
  return r.status ?? 1
}
