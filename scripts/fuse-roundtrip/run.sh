#!/usr/bin/env bash
# Round-trip cost of one getattr through the FUSE session: server and stat loop pinned to one CPU
# (PIN=same, default) or left to the scheduler (PIN=none). N stats, default 100000.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${N:-100000}
cpu=$(( $(nproc) - 1 ))
tmp=$(mktemp -d)
mnt=$tmp/mnt
mkdir "$mnt"
cc -O2 -o "$tmp/loop" "$here/loop.c"
cleanup () {
  [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  mountpoint -q "$mnt" && fusermount -u "$mnt" || true
  rm -rf "$tmp"
}
trap cleanup EXIT
node "$here/server.mjs" "$mnt" &
pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
stat "$mnt/f" >/dev/null
pin=()
if [[ ${PIN:-same} == same ]]; then
  taskset -a -p -c "$cpu" "$pid" >/dev/null
  pin=(taskset -c "$cpu")
fi
# The server's CPU time and context switches per request are steadier than latency on a busy VM.
if command -v perf >/dev/null; then
  perf stat -x, -e task-clock,context-switches -p "$pid" -o "$tmp/perf" -- "${pin[@]}" "$tmp/loop" stat "$mnt/f" "$n"
  awk -F, -v n="$n" '/task-clock/ { printf "server cpu/request=%.1f us  ", $1 * 1000 / n } /context-switches/ { printf "server switches/request=%.2f\n", $1 / n }' "$tmp/perf"
else
  "${pin[@]}" "$tmp/loop" stat "$mnt/f" "$n"
fi
if [[ -n ${STRACE:-} ]]; then
  timeout 20 strace -c -f -p "$pid" -o "$tmp/strace" & spid=$!
  sleep 1; taskset -c "$cpu" "$tmp/loop" stat "$mnt/f" 20000; kill -INT $spid; wait $spid || true
  cat "$tmp/strace"
fi
