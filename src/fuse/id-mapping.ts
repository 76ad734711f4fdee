import { StrataError } from '../errors.js'
import type { Attr, Caller } from '../overlay/attr.js'

/** The id the kernel shows for one that has no mapping (`/proc/sys/kernel/overflowuid`). */
export const OVERFLOW_ID = 65534

interface Range { disk: number, shown: number, count: number }

/**
 * How the ids stored in the layers show through the mount, as fuse-overlayfs's `uidmapping=` and
 * `gidmapping=` options define it: `DISK:SHOWN:COUNT`, several joined by `:`. podman passes them
 * for a container in a user namespace of its own (`--uidmap`, `--userns=auto`) when a mount
 * program serves its root: the image's files, stored with the container's ids, then belong to
 * the host ids the container's namespace maps them from. An id outside every range shows as the
 * overflow id, both ways. Empty fields are skipped: podman 4 writes a leading `:`.
 */
export class IdMapping {
  private constructor (private readonly ranges: readonly Range[]) {}

  static parse (option: string, spec: string): IdMapping {
    const parts = spec.split(':').filter(p => p !== '')
    const bad = (why: string): StrataError => new StrataError('BAD_REQUEST', `${option}=${spec}: ${why}`)
    if (parts.length === 0 || parts.length % 3 !== 0) throw bad('expected DISK:SHOWN:COUNT, several joined by ":"')
    const ranges: Range[] = []
    for (let i = 0; i < parts.length; i += 3) {
      const [disk, shown, count] = parts.slice(i, i + 3).map(p => /^\d+$/.test(p) ? Number(p) : NaN)
      if (!Number.isSafeInteger(disk) || !Number.isSafeInteger(shown) || !Number.isSafeInteger(count)) throw bad('ids and counts are decimal numbers')
      if (count! < 1 || disk! + count! > 2 ** 32 || shown! + count! > 2 ** 32) throw bad('a range must be non-empty and within 32-bit ids')
      ranges.push({ disk: disk!, shown: shown!, count: count! })
    }
    return new IdMapping(ranges)
  }

  /** The id a stored id shows as. */
  shown (disk: number): number {
    for (const r of this.ranges) if (disk >= r.disk && disk < r.disk + r.count) return r.shown + disk - r.disk
    return OVERFLOW_ID
  }

  /** The id a shown id (a caller's, a chown's) is stored as. */
  disk (shown: number): number {
    for (const r of this.ranges) if (shown >= r.shown && shown < r.shown + r.count) return r.disk + shown - r.shown
    return OVERFLOW_ID
  }
}

/**
 * fuse-overlayfs's `squash_to_root`, `squash_to_uid=` and `squash_to_gid=`: every name shows as
 * owned by these ids, whatever is stored (for a user namespace of one id, where stored owners
 * would otherwise show as the overflow id); what comes in is stored as it comes.
 */
export interface Squash { uid?: number, gid?: number }

/** Both mappings of a mount, either of which may be absent, and the squash ids if any. */
export class IdMappings {
  constructor (readonly uid?: IdMapping, readonly gid?: IdMapping, readonly squash: Squash = {}) {}

  shownAttr (attr: Attr): Attr {
    return {
      ...attr,
      uid: this.squash.uid ?? this.uid?.shown(attr.uid) ?? attr.uid,
      gid: this.squash.gid ?? this.gid?.shown(attr.gid) ?? attr.gid
    }
  }

  diskCaller (caller: Caller): Caller {
    return { ...caller, uid: this.diskUid(caller.uid), gid: this.diskGid(caller.gid) }
  }

  diskUid (uid: number): number {
    return this.uid?.disk(uid) ?? uid
  }

  diskGid (gid: number): number {
    return this.gid?.disk(gid) ?? gid
  }
}
