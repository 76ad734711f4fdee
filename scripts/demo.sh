#!/usr/bin/env bash
# A guided tour: build a three-layer image from scratch, import it, mount it read-only and look
# around. Everything lives in one temp dir that the trap removes, on success, failure or Ctrl-C.
#
# The demo is a list of steps (DEMO_STEPS below); each is a shell function. Later parts add a
# function and append its name to the list.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

stratafs () { node "$REPO/dist/bundle/main.js" "$@"; }
header () { printf '\n== %s ==\n' "$*"; }
# Show a command, then run it.
show () { printf '$ %s\n' "$*"; "$@"; }

WORK=$(mktemp -d -t stratafs-demo.XXXXXX)
export STRATAFS_ROOT=$WORK/root
SRC=$WORK/src
MNT=$WORK/mnt
LOG=$WORK/daemon.log
DAEMON_PID=
MOUNTS=()

cleanup () {
  local status=$?
  trap - EXIT
  trap "" INT TERM
  set +e
  for mp in "${MOUNTS[@]}"; do
    if mountpoint -q "$mp"; then
      stratafs umount "$mp" >/dev/null 2>&1 || umount -l "$mp" 2>/dev/null
    fi
  done
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  # Whatever the daemon did not unmount, so that rm never walks into a live mount.
  grep -o " $WORK[^ ]*" /proc/self/mounts | sort -r | while read -r mp; do umount -l "$mp"; done
  if ((status != 0)); then
    printf '\ndemo failed (exit %d); the last daemon log lines:\n' "$status" >&2
    tail -n 20 "$LOG" >&2 2>/dev/null
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step_build_layers () {
  header "building three layer directories under $SRC"
  local base=$SRC/base mid=$SRC/patch top=$SRC/app
  mkdir -p "$base"/{etc,usr/bin,usr/share/doc,var/cache/apt,home/demo}
  printf 'root:x:0:0:root:/root:/bin/sh\ndemo:x:1000:1000::/home/demo:/bin/sh\n' >"$base/etc/passwd"
  printf 'demo-os 1.0\n' >"$base/etc/os-release"
  printf 'legacy settings\n' >"$base/etc/legacy.conf"
  cp /bin/busybox "$base/usr/bin/busybox"
  ln -s busybox "$base/usr/bin/sh"
  ln "$base/usr/bin/busybox" "$base/usr/bin/ls"
  printf 'The base layer.\n' >"$base/usr/share/doc/README"
  printf 'stale package list\n' >"$base/var/cache/apt/pkglist"
  printf 'stale index\n' >"$base/var/cache/apt/index"
  chown -R 1000:1000 "$base/home/demo"

  # The second layer deletes a base file (an OCI whiteout) and replaces a base directory
  # wholesale (an OCI opaque marker): nothing of the old var/cache/apt shows through.
  mkdir -p "$mid"/{etc,var/cache/apt}
  : >"$mid/etc/.wh.legacy.conf"
  : >"$mid/var/cache/apt/.wh..wh..opq"
  printf 'fresh package list\n' >"$mid/var/cache/apt/pkglist"
  printf 'demo-os 1.1\n' >"$mid/etc/os-release"

  mkdir -p "$top"/{app,etc}
  printf '#!/usr/bin/sh\necho "hello from the app"\n' >"$top/app/run.sh"
  chmod 755 "$top/app/run.sh"
  printf '{"greeting": "hello"}\n' >"$top/app/config.json"
  printf 'PORT=8080\n' >"$top/etc/app.env"
  show ls -la "$base" "$mid/etc" "$mid/var/cache/apt" "$top"
}

step_start_daemon () {
  header "starting the daemon (root $STRATAFS_ROOT, logs in $LOG)"
  mkdir -p "$STRATAFS_ROOT"
  # node itself, not the stratafs function: $! must be the daemon's pid for the trap to stop it.
  node "$REPO/dist/bundle/main.js" daemon --root "$STRATAFS_ROOT" >"$LOG" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 100); do
    stratafs image ls >/dev/null 2>&1 && { echo "daemon up, pid $DAEMON_PID"; return; }
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo 'the daemon exited' >&2; return 1; }
    sleep 0.2
  done
  echo 'the daemon did not answer in 20 s' >&2
  return 1
}

step_import () {
  header 'importing the layers'
  BASE_ID=$(stratafs layer import "$SRC/base")
  PATCH_ID=$(stratafs layer import "$SRC/patch")
  APP_ID=$(stratafs layer import "$SRC/app")
  printf 'base   %s\npatch  %s\napp    %s\n' "$BASE_ID" "$PATCH_ID" "$APP_ID"
  header 'stratafs image create demo:1 base patch app'
  stratafs image create demo:1 "$BASE_ID" "$PATCH_ID" "$APP_ID"
  header 'stratafs image ls'
  stratafs image ls
}

step_readonly_mount () {
  mkdir -p "$MNT"
  header "stratafs mount demo:1 $MNT --read-only"
  stratafs mount demo:1 "$MNT" --read-only
  MOUNTS+=("$MNT")
  header "ls -la $MNT"
  ls -la "$MNT"
  header "ls -la $MNT/etc (legacy.conf is gone: whited out by the second layer)"
  ls -la "$MNT/etc"
  header "ls -la $MNT/var/cache/apt (opaque: only the second layer's files)"
  ls -la "$MNT/var/cache/apt"
  header "cat $MNT/etc/os-release $MNT/app/config.json"
  cat "$MNT/etc/os-release" "$MNT/app/config.json"
  header "find $MNT -type f"
  find "$MNT" -type f | sort
  header "touch $MNT/new (a read-only mount refuses writes)"
  if touch "$MNT/new" 2>&1; then echo 'unexpected: the write succeeded' >&2; return 1; fi
  header 'stratafs image history demo:1'
  stratafs image history demo:1
  header "stratafs umount $MNT"
  stratafs umount "$MNT"
}

step_copy_on_write () {
  local c1=$WORK/c1 c2=$WORK/c2
  mkdir -p "$c1" "$c2"
  header "two containers of demo:1: stratafs mount demo:1 $c1 --name web1; … $c2 --name web2"
  stratafs mount demo:1 "$c1" --name web1
  MOUNTS+=("$c1")
  stratafs mount demo:1 "$c2" --name web2
  MOUNTS+=("$c2")
  header "writing through web1: a lower file changed (copy-up), one added, one removed"
  show sh -c "echo 'PORT=9090' >> '$c1/etc/app.env'"
  show sh -c "echo 'hello' > '$c1/app/new.txt'"
  show rm "$c1/etc/passwd"
  header "cat etc/app.env through web1, then through web2 (unchanged there)"
  cat "$c1/etc/app.env"
  echo '--'
  cat "$c2/etc/app.env"
  header 'stratafs ps'
  stratafs ps
  header 'stratafs diff web1'
  stratafs diff web1
  header 'stratafs commit web1 demo:2 --message "port 9090"'
  stratafs commit web1 demo:2 --message 'port 9090'
  header 'stratafs image ls'
  stratafs image ls
  header 'stratafs image history demo:2'
  stratafs image history demo:2
  header 'unmounting and removing both containers'
  stratafs umount "$c1"
  stratafs umount "$c2"
  stratafs rm web1
  stratafs rm web2
}

DEMO_STEPS=(step_build_layers step_start_daemon step_import step_readonly_mount step_copy_on_write)

for step in "${DEMO_STEPS[@]}"; do "$step"; done
header 'done'
