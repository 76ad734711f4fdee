import fs from 'node:fs'
import { StrataError } from '../errors.js'
import * as sys from '../sys/index.js'
import type { Stat } from '../sys/index.js'
import { OverlayXattrs, isOpaqueValue } from '../layers/overlay-xattrs.js'
import { isKernelWhiteout, makeWhiteout } from '../layers/whiteout.js'
import { join } from './lower-index.js'
import { isDirMode } from './mode.js'

/**
 * What the upper says of one of its directories: whether it is opaque, and where its lower
 * directory is when kernel overlayfs moved it with redirect_dir (its redirect xattr: an absolute
 * path, or a name in its parent's lower directory). stratafs follows such redirects, as the
 * kernel does by default, and makes none: it refuses those renames with EXDEV. A directory
 * whose redirect the kernel would not follow is `refused` at every lookup, as there: under
 * `user.` xattrs, which its owner can set (redirect_dir=nofollow: EPERM), or an invalid one (EINVAL).
 */
interface DirState { opaque: boolean, redirect?: string, refused?: StrataError }

/**
 * The writable directory of a container and its work directory, in the kernel's format:
 * whiteouts are char 0/0 devices and opaque directories carry `trusted.overlay.opaque=y` (with
 * `userxattr`, `user.overlay.opaque=y`), so kernel overlayfs can mount the same upper. Only this process changes the upper while it is
 * mounted, so what it learns about upper directories stays true until it changes them itself.
 */
export class Upper {
  readonly dir: string
  /** Temporary names live in `<workdir>/work`, the subdirectory kernel overlayfs also uses. */
  readonly tmpDir: string
  /** Where copied-up files' inode numbers are remembered (see InodeMap). */
  readonly inodeLog: string
  /** Where empty files wait to become copy-ups (see SpareFiles). */
  readonly spareDir: string
  /** Per path: null when the upper has no directory there. */
  private readonly dirState = new Map<string, DirState | null>()
  /** How many known directories carry a redirect: while none does, lowerPath has nothing to do. */
  private redirects = 0
  private tmpCounter = 0

  constructor (upperDir: string, workDir: string, readonly xattrs: OverlayXattrs) {
    this.dir = upperDir
    this.tmpDir = workDir + '/work'
    this.inodeLog = workDir + '/stratafs-inodes'
    this.spareDir = workDir + '/stratafs-spare'
  }

  /** Leftovers of an interrupted copy-up are half-built: they go, as the kernel does at mount. */
  cleanWork (): void {
    fs.rmSync(this.tmpDir, { recursive: true, force: true })
    fs.mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 })
  }

  real (path: string): string {
    return path === '/' ? this.dir : this.dir + path
  }

  tmpName (): string {
    return `${this.tmpDir}/#${process.pid.toString(36)}-${(this.tmpCounter++).toString(36)}`
  }

  stat (path: string): Stat | undefined {
    return sys.lstatIfExists(this.real(path))
  }

  /** Whether the upper holds a real directory at `path`, and what it says of it. Cached. */
  dirAt (path: string): DirState | null {
    const known = this.dirState.get(path)
    if (known !== undefined) return known
    let state: DirState | null = null
    const parent = path === '/' ? null : this.dirAt(parentOf(path))
    if (path === '/' || parent !== null) {
      const st = this.stat(path)
      if (st !== undefined && isDirMode(st.mode)) state = path === '/' ? { opaque: false } : this.readDirState(path)
    }
    this.dirState.set(path, state)
    return state
  }

  /** One listing of its xattrs, which most directories have none of. */
  private readDirState (path: string): DirState {
    const real = this.real(path)
    const names = sys.llistxattr(real)
    const state: DirState = { opaque: names.includes(this.xattrs.opaque) && isOpaqueValue(sys.lgetxattr(real, this.xattrs.opaque)) }
    if (!state.opaque && names.includes(this.xattrs.redirect)) {
      if (this.xattrs !== OverlayXattrs.trusted) {
        state.refused = new StrataError('EPERM', `${path}: a redirect under user xattrs, which the kernel does not follow either`)
        return state
      }
      const redirect = sys.lgetxattr(real, this.xattrs.redirect)?.toString()
      if (redirect !== undefined && !isRedirect(redirect)) {
        state.refused = new StrataError('EINVAL', `${path}: invalid redirect ${JSON.stringify(redirect)}`)
      } else if (redirect !== undefined) {
        state.redirect = redirect
        this.redirects++
      }
    }
    return state
  }

  noteDir (path: string, opaque: boolean): void {
    this.dirState.set(path, { opaque })
  }

  /** After a directory goes away or moves, what was learnt below it is stale. */
  forgetDirs (): void {
    this.dirState.clear()
    this.redirects = 0
  }

  /** Whether directory `path` finds its lower directory by an absolute redirect, whatever hides the lower above it. */
  redirectsFromRoot (path: string): boolean {
    return this.redirects > 0 && this.dirState.get(path)?.redirect?.startsWith('/') === true
  }

  /**
   * Where the lower layers keep what the merged view shows at `path`, whose directories this
   * has looked at (dirAt): `path` itself, unless a directory on the way (or `path`) has a redirect.
   */
  lowerPath (path: string): string {
    if (this.redirects === 0 || path === '/') return path
    const redirect = this.dirState.get(path)?.redirect
    if (redirect?.startsWith('/') === true) return redirect
    const parent = this.lowerPath(parentOf(path))
    return join(parent, redirect ?? baseName(path))
  }

  isWhiteout (st: Stat | undefined): boolean {
    return st !== undefined && isKernelWhiteout(st.mode, st.rdev)
  }

  /**
   * Puts a whiteout at `path`, replacing a non-directory there in one rename. Built in the work
   * directory as the kernel builds its own (mode 0000, root's), so a setgid parent gives it no
   * group of its own.
   */
  whiteout (path: string): void {
    const tmp = this.tmpName()
    makeWhiteout(tmp, 0)
    fs.renameSync(tmp, this.real(path))
  }

  /**
   * Renames `from` (an upper path) to the real path `to`; with `whiteout`, a whiteout takes its
   * place in the same rename (RENAME_WHITEOUT, which the kernel's rename uses too: the whiteout
   * takes a setgid parent's group).
   */
  move (from: string, to: string, whiteout: boolean): void {
    sys.renameat2(this.real(from), to, whiteout ? sys.RENAME_WHITEOUT : 0)
  }

  /**
   * Moves the node at `path` into the work directory and returns where; with `whiteout`, a
   * whiteout built there takes its place in the same rename (RENAME_EXCHANGE), as the kernel
   * removes a name.
   */
  takeAway (path: string, whiteout: boolean): string {
    const tmp = this.tmpName()
    if (whiteout) {
      makeWhiteout(tmp, 0)
      sys.renameat2(tmp, this.real(path), sys.RENAME_EXCHANGE)
    } else {
      fs.renameSync(this.real(path), tmp)
    }
    return tmp
  }

  setOpaque (real: string): void {
    this.xattrs.markOpaque(real)
  }
}

/**
 * Whether a redirect xattr's value is one the kernel follows: an absolute path with no empty, `.`
 * or `..` names, or one such name.
 */
export function isRedirect (value: string): boolean {
  const names = value.startsWith('/') ? value.slice(1).split('/') : [value]
  return !names.some(name => name === '' || name === '.' || name === '..' || name.includes('/'))
}

/** The last name of `path`. */
export function baseName (path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

export function parentOf (path: string): string {
  const slash = path.lastIndexOf('/')
  return slash <= 0 ? '/' : path.slice(0, slash)
}
