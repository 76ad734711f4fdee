#!/usr/bin/env bash
# Concurrency stress on a writable stratafs mount: parallel readers, writers, renames and unlinks
# (libfuse path-lock conflicts while requests are in flight), then an unmount while busy.
# Fails if anything hangs (timeout) or the daemon does not exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${SECS:-20}
tmp=$(mktemp -d)
mkdir -p "$tmp"/{lower/d,upper,work,mnt}
for i in $(seq 200); do head -c $((i * 1000)) /dev/urandom >"$tmp/lower/d/f$i"; done
cleanup () {
  [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null || true
  sleep 0.5
  mountpoint -q "$tmp/mnt" && { fusermount -u "$tmp/mnt" || umount -l "$tmp/mnt"; }
  rm -rf "$tmp"
}
trap cleanup EXIT
node "$root/bin/stratafs-overlay" -f overlay "$tmp/mnt" \
  -o "lowerdir=$tmp/lower,upperdir=$tmp/upper,workdir=$tmp/work" 2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do mountpoint -q "$tmp/mnt" && break; sleep 0.05; done
m=$tmp/mnt/d
end=$((SECONDS + secs))
worker () {
  local k=$1 n=0
  while ((SECONDS < end)); do
    i=$((RANDOM % 200 + 1))
    case $((k % 5)) in
      0) cat "$m/f$i" >/dev/null 2>&1 || true ;;
      1) echo "$k $n" >>"$m/f$i" 2>/dev/null || true ;;
      2) mv "$m/f$i" "$m/g$k" 2>/dev/null && mv "$m/g$k" "$m/f$i" 2>/dev/null || true ;;
      3) rm -f "$m/n$k"; echo x >"$m/n$k"; ls -l "$m" >/dev/null ;;
      4) exec 9<"$m/f$i" 2>/dev/null && { rm -f "$m/f$i"; cat <&9 >/dev/null; exec 9<&-; cp "$tmp/lower/d/f$i" "$m/f$i"; } || true ;;
    esac
    n=$((n + 1))
  done
  echo "worker $k: $n ops"
}
for k in $(seq 0 9); do timeout $((secs + 30)) bash -c "$(declare -f worker); end=$end; m=$m; tmp=$tmp; worker $k" & done
wait_ok=0
for j in $(jobs -p); do [[ $j == "$pid" ]] && continue; wait "$j" || wait_ok=$?; done
((wait_ok == 0)) || { echo "a worker hung or failed ($wait_ok)"; exit 1; }
find "$tmp/mnt" | wc -l
# Unmount while requests are in flight.
(for _ in $(seq 50); do cat "$m"/f* >/dev/null 2>&1 || true; done) & busy=$!
sleep 0.3
kill "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { echo "daemon still running after SIGTERM"; exit 1; }
wait "$busy" 2>/dev/null || true
pid=
echo "stress ok"
