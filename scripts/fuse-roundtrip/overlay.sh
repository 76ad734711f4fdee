#!/usr/bin/env bash
# Per-request cost on a real stratafs mount (writable, one lower layer), against fuse-overlayfs
# and the one-file C floor when present. Server and loop pinned to the last CPU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${N:-20000}
cpu=$(( $(nproc) - 1 ))
tmp=$(mktemp -d)
cc -O2 -o "$tmp/loop" "$here/loop.c"
pids=()
cleanup () {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait
  for m in "$tmp"/*/mnt; do mountpoint -q "$m" && { fusermount -u "$m" || umount -l "$m"; }; done
  rm -rf "$tmp"
}
trap cleanup EXIT
run () {
  local name=$1 pid=$2 mnt=$3
  taskset -a -p -c "$cpu" "$pid" >/dev/null
  echo "== $name"
  for op in ${OPS:-stat openclose pwrite}; do taskset -c "$cpu" "$tmp/loop" "$op" "$mnt/f" "$n"; done
  if [[ -n ${STRACE:-} ]]; then
    timeout 60 strace -c -f -p "$pid" -o "$tmp/strace" & local spid=$!
    sleep 1; taskset -c "$cpu" "$tmp/loop" "$STRACE" "$mnt/f" 10000; kill -INT $spid; wait $spid || true
    grep -vE "detached|attached" "$tmp/strace"
  fi
}
prep () {
  mkdir -p "$tmp/$1"/{lower,upper,work,mnt}
  echo hello >"$tmp/$1/lower/f"
}
prep strata
node "$root/bin/stratafs-overlay" -f overlay "$tmp/strata/mnt" \
  -o "lowerdir=$tmp/strata/lower,upperdir=$tmp/strata/upper,workdir=$tmp/strata/work" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do mountpoint -q "$tmp/strata/mnt" && break; sleep 0.05; done
run stratafs "${pids[-1]}" "$tmp/strata/mnt"
if command -v fuse-overlayfs >/dev/null; then
  prep fo
  fuse-overlayfs -f -o "lowerdir=$tmp/fo/lower,upperdir=$tmp/fo/upper,workdir=$tmp/fo/work,timeout=0" "$tmp/fo/mnt" &
  pids+=($!)
  for _ in $(seq 100); do mountpoint -q "$tmp/fo/mnt" && break; sleep 0.05; done
  run fuse-overlayfs "${pids[-1]}" "$tmp/fo/mnt"
fi
