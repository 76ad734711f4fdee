import { createHash } from 'node:crypto'

/** The OCI image config, the part of an image its ID is computed from. */
export interface ImageConfig {
  architecture: string
  os: string
  created: string
  /** Set by the tools that built an imported image (`docker commit -a/-m`, buildkit). */
  author?: string
  comment?: string
  config: {
    Env?: string[]
    Cmd?: string[]
    WorkingDir?: string
    Labels?: Record<string, string>
    ExposedPorts?: Record<string, Record<string, never>>
  }
  rootfs: { type: 'layers'; diff_ids: string[] }
  history: HistoryEntry[]
}

export interface HistoryEntry {
  created: string
  created_by?: string
  comment?: string
  empty_layer?: boolean
}

/**
 * JSON with object keys sorted at every level: the same config always hashes to the same ID,
 * whatever order its fields were assembled in.
 */
export function canonicalJson (value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v
    const sorted: Record<string, unknown> = {}
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k]
    return sorted
  })
}

export function imageId (config: ImageConfig): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(config)).digest('hex')
}

/** The OCI names for Node's platform values. */
export function ociArchitecture (arch: string = process.arch): string {
  const map: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' }
  return map[arch] ?? arch
}
