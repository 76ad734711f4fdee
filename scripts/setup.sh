#!/usr/bin/env bash
# Brings a checkout to a runnable state, doing only what is missing: system packages, npm ci,
# the native FUSE addon, then the TypeScript build (always).
set -euo pipefail
cd "$(dirname "$0")/.."

log () { printf 'setup: %s\n' "$*" >&2; }

installed () {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# libfuse3-dev brings libfuse 3 and its headers; fuse3 its fusermount3. With `test`, also what
# only the tests drive: podman and runc, to run stratafs-overlay as podman's mount program, and
# what rootless podman needs besides (catatonit holds its user namespace, uidmap maps its ids);
# strace, to see which syscalls a server makes.
packages=(libfuse3-dev pkg-config fuse3 attr busybox-static fuse-overlayfs)
[[ ${1:-} == test ]] && packages+=(podman runc catatonit uidmap strace)
missing=()
for pkg in "${packages[@]}"; do
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

# The addons (native/): the FUSE session, built against libfuse 3's headers, and the directory
# listing a layer walk uses; rebuilt when a source changes. Node's headers come with the
# distribution's nodejs; node-gyp must not download them.
stale=0
for addon in native/build/Release/fuse_session.node native/build/Release/dir_stats.node; do
  [[ -f $addon ]] || stale=1
  for src in native/*.c native/binding.gyp; do [[ ! -f $addon || $src -nt $addon ]] && stale=1; done
done
if ((stale)); then
  log 'building native/'
  gyp=("$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js" rebuild)
  [[ -f /usr/include/node/node_api.h ]] && gyp+=(--nodedir=/usr)
  (cd native && node "${gyp[@]}" >build.log 2>&1) || { cat native/build.log >&2; exit 1; }
fi

# The build info lives in dist/ so that removing dist/ forces a full emit.
node node_modules/typescript/bin/tsc -p tsconfig.json --incremental --tsBuildInfoFile dist/.tsbuildinfo

# The CLI and the overlay server, each as one file (see bundle.mjs).
node scripts/bundle.mjs
