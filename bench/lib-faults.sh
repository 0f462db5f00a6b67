# shellcheck shell=bash
# bench/lib-faults.sh: what bench/faults.sh and bench/load.sh share. Source
# it after `set -euo pipefail` and `cd` to the top of the checkout:
#
#   . bench/lib-faults.sh
#   bench_init faults        # or load
#
# bench_init sources tests/guest/guest.sh, builds the test guest, makes
# sure libvirtd runs and sets: top, vmsnapfs ($VMSNAPFS, default
# build/fs/vmsnapfs), prefix (vmsnapfs-b-PID-), work (/var/tmp/...),
# disks (the guests' disk directory), mnt, logs; VMSNAPFS_STATE_DIR is the
# run's own. Everything made through these functions (guests, daemons, the
# mount, the files) is removed at exit by bench_cleanup (trap EXIT); a
# script adds its own steps with bench_at_exit.

top=$PWD
vmsnapfs=${VMSNAPFS:-$top/build/fs/vmsnapfs}
_bench_daemons=()
_bench_at_exit=()

bench_at_exit() { _bench_at_exit+=("$*"); }

bench_cleanup() {
    local status=$? i pid
    trap - EXIT INT TERM
    for ((i = ${#_bench_at_exit[@]} - 1; i >= 0; i--)); do
        eval "${_bench_at_exit[i]}" || true
    done
    # a daemon we started and did not stop: unmount, then end it by its pid
    if [ -n "${mnt:-}" ] && is_mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
    fi
    for pid in "${_bench_daemons[@]+"${_bench_daemons[@]}"}"; do
        if kill -0 "$pid" 2>/dev/null; then
            wait_until 10 _bench_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
        fi
    done
    # libvirtd may have been stopped by a fault that did not finish
    libvirt_ensure_running >/dev/null 2>&1 || true
    [ -n "${prefix:-}" ] && guest_cleanup_prefix "$prefix" >/dev/null 2>&1 || true
    if [ -n "${KEEP_LOGS:-}" ] && [ -d "${logs:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp -r "$logs"/. "$KEEP_LOGS"/ &&
            echo "logs kept in $KEEP_LOGS" >&2
    fi
    [ -n "${work:-}" ] && rm -rf "$work"
    exit "$status"
}
_bench_gone() { ! kill -0 "$1" 2>/dev/null; }

bench_init() {
    # shellcheck source=../tests/guest/guest.sh
    . "$top/tests/guest/guest.sh"
    [ "$(id -u)" = 0 ] || { echo "$1: needs root" >&2; exit 1; }
    [ -x "$vmsnapfs" ] || { echo "$1: no daemon at $vmsnapfs (VMSNAPFS=...)" >&2; exit 1; }
    guest_build >/dev/null 2>&1 || { echo "$1: cannot build the test guest" >&2; exit 1; }
    libvirt_ensure_running
    guest_cleanup_stale vmsnapfs-b- >/dev/null 2>&1 || true
    prefix="vmsnapfs-b-$$-"
    work=$(mktemp -d "/var/tmp/vmsnapfs-bench-$1.XXXXXX")
    chmod 0755 "$work"
    disks=$work/disks
    mnt=$work/mnt
    logs=$work/logs
    mkdir -p "$disks" "$mnt" "$logs"
    chmod 0755 "$disks"
    export VMSNAPFS_STATE_DIR=$work/state     # the daemon's records go with the run
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

is_mounted() { grep -q " $1 fuse.vmsnapfs " /proc/mounts; }

# wait_until SECONDS CMD...: poll CMD every 100 ms until it succeeds.
wait_until() {
    local limit=$1 end
    shift
    end=$(($(ms_now) + limit * 1000))
    until "$@" 2>/dev/null; do
        (($(ms_now) < end)) || return 1
        sleep 0.1
    done
}

# daemon_start [NAME=VALUE...]: a daemon in the foreground, in our
# background, with the environment given; waits for the mount. Sets
# DAEMON_PID and DAEMON_LOG (one log per daemon, in $logs).
_bench_daemon_n=0
daemon_start() {
    _bench_daemon_n=$((_bench_daemon_n + 1))
    DAEMON_LOG=$logs/vmsnapfs-$_bench_daemon_n.log
    env "$@" "$vmsnapfs" -f qemu:///system "$mnt" 2>"$DAEMON_LOG" &
    DAEMON_PID=$!
    # out of the job table: no "Killed" notice when a fault kills it (bash
    # still reaps it; daemon_alive polls)
    disown "$DAEMON_PID"
    _bench_daemons+=("$DAEMON_PID")
    if ! wait_until 15 is_mounted "$mnt"; then
        echo "no mount after 15 s: $(tail -n 5 "$DAEMON_LOG")" >&2
        return 1
    fi
}

# daemon_stop: unmount; the daemon ends by itself.
daemon_stop() {
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
    wait_until 30 _bench_gone "$DAEMON_PID" || kill -9 "$DAEMON_PID" 2>/dev/null || true
}

# daemon_reap: after the daemon died (SIGKILL), its mount goes too.
daemon_reap() {
    wait_until 10 _bench_gone "$DAEMON_PID" || true
    if is_mounted "$mnt"; then fusermount3 -uz "$mnt" 2>/dev/null || true; fi
}

daemon_alive() { kill -0 "$DAEMON_PID" 2>/dev/null; }

# errno_name MESSAGE: the errno name of an error message of cp, mkdir,
# rmdir, sha256sum or bash (the strerror text after the last ": "), or
# "other(...)".
errno_name() {
    local m=${1##*: }
    m=${m%%$'\n'*}
    case "$m" in
        "Operation not permitted") echo EPERM ;;
        "No such file or directory") echo ENOENT ;;
        "Input/output error") echo EIO ;;
        "Permission denied") echo EACCES ;;
        "Device or resource busy") echo EBUSY ;;
        "File exists") echo EEXIST ;;
        "Not a directory") echo ENOTDIR ;;
        "Invalid argument") echo EINVAL ;;
        "Read-only file system") echo EROFS ;;
        "Resource temporarily unavailable") echo EAGAIN ;;
        "Connection timed out") echo ETIMEDOUT ;;
        "Directory not empty") echo ENOTEMPTY ;;
        "Transport endpoint is not connected") echo ENOTCONN ;;
        "Software caused connection abort") echo ECONNABORTED ;;
        "No space left on device") echo ENOSPC ;;
        "Cannot allocate memory") echo ENOMEM ;;
        *) echo "other($m)" ;;
    esac
}

# thawed VM: the guest agent says the guest's filesystems are not frozen.
thawed() {
    [[ "$(guest_agent "$1" '{"execute":"guest-fsfreeze-status"}' 5 2>/dev/null)" == *thawed* ]]
}

vm_running() { [ "$(guest_state "$1")" = running ]; }

# snap_hash VM SNAP: sha256 of the snapshot's vda.img read through the mount.
snap_hash() {
    local h
    h=$(sha256sum <"$mnt/$1/snapshots/$2/volumes/vda.img") || return 1
    echo "${h%% *}"
}

# snap_marker VM SNAP: /marker of the snapshot's file system (debugfs on the
# snapshot's raw volume), empty if there is none.
snap_marker() {
    { debugfs -R 'cat /marker' "$mnt/$1/snapshots/$2/volumes/vda.img" 2>/dev/null || true; } |
        tr -d '\r\n'
}

# A small seeded random number generator of our own (bash's $RANDOM
# differs between versions and is reseeded in subshells): rng_seed S, then
# rnd N sets R to a number in [0, N).
rng_seed() { _rng=$(($1 % 2147483648)); }
rnd() {
    _rng=$(((_rng * 1103515245 + 12345) % 2147483648))
    # shellcheck disable=SC2034 # R is the caller's
    R=$(((_rng >> 8) % $1))
}

# percentile P FILE: the P-th percentile (nearest rank) of the numbers in FILE.
percentile() {
    sort -n "$2" | awk -v p="$1" '{ a[NR] = $1 }
        END { if (!NR) { print "-"; exit } i = int((p * NR + 99) / 100); if (i < 1) i = 1; print a[i] }'
}

# bench_guest NAME SIZE: a running guest with agent on a qcow2 disk in $disks.
bench_guest() {
    guest_make_disk "$disks/$1.qcow2" "$2" qcow2
    guest_define "$prefix$1" --disk "$disks/$1.qcow2:qcow2"
    guest_start "$prefix$1"
}
daemon_dead() { ! kill -0 "$DAEMON_PID" 2>/dev/null; }
