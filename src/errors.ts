/**
 * Errors are values with a code. The FUSE adapter turns `code` into an errno, the CLI into one
 * line, the daemon's API into an HTTP status. Codes that name an errno (ENOENT, EEXIST, ...) keep
 * the errno's name so the FUSE boundary can map them directly.
 */
export type ErrorCode =
  | 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EXDEV' | 'EROFS' | 'EPERM'
  | 'EACCES' | 'EINVAL' | 'ENODATA' | 'ERANGE' | 'EBADF' | 'ENOTSUP' | 'ENAMETOOLONG' | 'EIO'
  | 'EBUSY' | 'ELOOP' | 'ENOSPC' | 'EMLINK' | 'E2BIG' | 'ESTALE'
  | 'BAD_TAR' | 'BAD_IMAGE' | 'UNSAFE_PATH' | 'NOT_FOUND' | 'CONFLICT' | 'BAD_REQUEST' | 'STORE_LOCKED'
  | 'NO_DAEMON' | 'MOUNT_FAILED' | 'NO_FUSE' | 'INTERNAL'

export class StrataError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = 'StrataError'
  }
}

/** Node's own fs errors carry `code` too; this reads either kind. */
export function errorCode (err: unknown): string | undefined {
  if (err !== null && typeof err === 'object' && 'code' in err) {
    const code = (err as { code: unknown }).code
    return typeof code === 'string' ? code : undefined
  }
  return undefined
}
