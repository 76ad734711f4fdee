#!/usr/bin/env bash
# Brings a checkout to a runnable state, doing only what is missing: system packages, npm ci,
# the fuse-native patch and its native rebuild, then the TypeScript build (always).
set -euo pipefail
cd "$(dirname "$0")/.."

log () { printf 'setup: %s\n' "$*" >&2; }

installed () {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Debian 13 renamed libfuse2 for the 64-bit time_t transition; either provides libfuse.so.2.
missing=()
if ! installed libfuse2 && ! installed libfuse2t64; then
  if apt-cache show libfuse2t64 >/dev/null 2>&1; then missing+=(libfuse2t64); else missing+=(libfuse2); fi
fi
for pkg in fuse3 attr busybox-static fuse-overlayfs; do
  installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if ((EUID != 0)); then
    log "missing packages: ${missing[*]} (run this script as root to install them)"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log 'npm ci'
  npm ci --no-audit --no-fund
fi

# fuse-native 2.2.6 ships a prebuilt binding with millisecond times, 32-bit inode numbers and
# other defects (see the patch). Patch its C and JS, then build; node-gyp-build loads
# build/Release/fuse.node before any prebuild.
fuse=node_modules/fuse-native
patchfile=patches/fuse-native+2.2.6.patch
# The patch that is applied is kept beside it, so a checkout whose patch changed since can take
# the old one off first.
applied=$fuse/.stratafs.patch
if ! cmp -s "$patchfile" "$applied" 2>/dev/null; then
  if [[ -f $applied ]]; then
    log "taking the previous patch off $fuse"
    patch -p1 -R -s -d "$fuse" <"$applied"
  fi
  if ! patch -p1 -R --dry-run -s -f -d "$fuse" <"$patchfile" >/dev/null 2>&1; then
    log "patching $fuse"
    patch -p1 -N -s -d "$fuse" <"$patchfile"
  fi
  cp "$patchfile" "$applied"
  rm -rf "$fuse/build"
fi
if [[ ! -f $fuse/build/Release/fuse.node || $patchfile -nt $fuse/build/Release/fuse.node ]]; then
  log "building $fuse"
  gyp=("$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js" rebuild)
  [[ -f /usr/include/node/node_api.h ]] && gyp+=(--nodedir=/usr)
  (cd "$fuse" && node "${gyp[@]}" >build.log 2>&1) || { cat "$fuse/build.log" >&2; exit 1; }
  node -e "require('fuse-native')"
fi

# The build info lives in dist/ so that removing dist/ forces a full emit.
node node_modules/typescript/bin/tsc -p tsconfig.json --incremental --tsBuildInfoFile dist/.tsbuildinfo
