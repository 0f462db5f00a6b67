#!/usr/bin/env bash
# mount-helpers.sh: the daemon behaves as a FUSE daemon should: --help,
# --version, clear errors for bad arguments, background mode, mount -t
# fuse.vmsnapfs and /etc/fstab (mount.fuse3 convention), SIGTERM.
. "${0%/*}/lib.sh"
requires_fuse
requires_root
requires mount

dir=$(workdir)

# --help and --version go to stdout and exit 0
help=$("$VMSNAPFS" --help)
grep -q "^Usage: vmsnapfs \[OPTIONS\] SOURCE MOUNTPOINT" <<<"$help" || fail "--help"
help=$("$VMSNAPFS" -h)
grep -q "failure_deadline=" <<<"$help" || fail "-h lacks options"
"$VMSNAPFS" --version | grep -Eq "^vmsnapfs [0-9]+\.[0-9]+\.[0-9]+$" ||
    fail "--version: $("$VMSNAPFS" --version)"

# bad arguments: exit 2, a reason on stderr, no mount
mkdir -p "$dir/m"
set +e
"$VMSNAPFS" -f -o failure_deadline=soon test:///default "$dir/m" 2>"$dir/err"
status=$?
set -e
[ "$status" = 2 ] || fail "bad option: exit status $status"
grep -q "invalid mount option 'failure_deadline=soon'" "$dir/err" ||
    fail "bad option message: $(cat "$dir/err")"
set +e
"$VMSNAPFS" -f -o consistency=sometimes test:///default "$dir/m" 2>"$dir/err"
status=$?
"$VMSNAPFS" test:///default 2>"$dir/err2"
status2=$?
set -e
[ "$status" = 2 ] || fail "bad consistency: exit status $status"
[ "$status2" = 2 ] || fail "missing mountpoint: exit status $status2"
grep -q "SOURCE and MOUNTPOINT are required" "$dir/err2" || fail "usage message"

# a source no backend serves: exit 1 before mounting, in the background too
set +e
"$VMSNAPFS" nonsense "$dir/m" 2>"$dir/err"
status=$?
set -e
[ "$status" = 1 ] || fail "bad source: exit status $status"
grep -q "no backend for source 'nonsense'" "$dir/err" || fail "bad source message: $(cat "$dir/err")"
is_mounted "$dir/m" && fail "mounted despite a bad source"
set +e
KUBECONFIG=$dir/no-kubeconfig "$VMSNAPFS" -f kubevirt:// "$dir/m" 2>"$dir/err"
status=$?
set -e
[ "$status" = 1 ] || fail "kubevirt:// without a kubeconfig: exit status $status"
grep -q "no kubeconfig file: '$dir/no-kubeconfig'" "$dir/err" ||
    fail "kubevirt:// message: $(cat "$dir/err")"

# a libvirt URI that cannot be opened: exit 1, libvirt's reason on stderr
set +e
"$VMSNAPFS" -f "qemu+unix:///system?socket=$dir/nosocket" "$dir/m" 2>"$dir/err"
status=$?
set -e
[ "$status" = 1 ] || fail "unreachable libvirt: exit status $status"
grep -q "vmsnapfs\[libvirt\]: error: connect to" "$dir/err" ||
    fail "unreachable libvirt message: $(cat "$dir/err")"
is_mounted "$dir/m" && fail "mounted despite an unreachable libvirt"

# background mode: returns once mounted; fusermount3 -u ends the daemon
"$VMSNAPFS" test:///default "$dir/m"
is_mounted "$dir/m" || fail "not mounted after the background start"
at_exit "is_mounted '$dir/m' && fusermount3 -u '$dir/m'; true"
[ "$(cat "$dir/m/test/state")" = running ] || fail "state in background mode"
pid=$(pgrep -f "^$VMSNAPFS test:///default $dir/m\$")
fusermount3 -u "$dir/m"
wait_until 5 sh -c "! kill -0 $pid" || fail "daemon $pid still runs after unmount"

# a relative mountpoint in the background: the daemon moves to /, and
# still unmounts the right directory on SIGTERM
mkdir -p "$dir/rel"
(cd "$dir" && "$VMSNAPFS" test:///default rel)
is_mounted "$dir/rel" || fail "relative mountpoint not mounted at $dir/rel"
at_exit "is_mounted '$dir/rel' && fusermount3 -u '$dir/rel'; true"
pid=$(pgrep -f "^$VMSNAPFS test:///default rel\$")
kill -TERM "$pid"
wait_until 5 sh -c "! kill -0 $pid" || fail "daemon $pid still runs after SIGTERM"
is_mounted "$dir/rel" && fail "relative mountpoint still mounted after SIGTERM"

# mount -t fuse.vmsnapfs and fstab. mount(8) runs helpers with no PATH, so
# mount.fuse3's shell finds `vmsnapfs` in the default PATH only: run these
# in a private mount namespace where /usr/local/sbin holds a link to the
# binary under test, leaving the host's untouched.
requires unshare
mkdir -p "$dir/sbin"
ln -s "$VMSNAPFS" "$dir/sbin/vmsnapfs"
export dir ERRNO_PROBE
unshare -m --propagation private bash -euo pipefail -c '
    fail() { echo "FAIL: mount-helpers: $*" >&2; exit 1; }
    is_mounted() { grep -q " $1 fuse.vmsnapfs " /proc/mounts; }
    mount --bind "$dir/sbin" /usr/local/sbin
    mkdir -p "$dir/t" "$dir/f"

    mount -t fuse.vmsnapfs test:///default "$dir/t" \
        -o failure_deadline=1m,consistency=required,nosuid,nodev
    is_mounted "$dir/t" || fail "mount -t fuse.vmsnapfs"
    grep -q "^test:///default $dir/t fuse.vmsnapfs .*nosuid,nodev" /proc/mounts ||
        fail "source or options not in /proc/mounts: $(grep "$dir/t" /proc/mounts)"
    [ "$(cat "$dir/t/test/state")" = running ] || fail "state via mount -t"
    umount "$dir/t"
    is_mounted "$dir/t" && fail "umount did not unmount"

    echo "test:///default $dir/f fuse.vmsnapfs defaults,noauto,failure_deadline=30s 0 0" >"$dir/fstab"
    mount --fstab "$dir/fstab" "$dir/f"
    is_mounted "$dir/f" || fail "mount from fstab"
    [ -d "$dir/f/test/snapshots" ] || fail "tree via fstab"
    umount "$dir/f"

    # a bad option fails the mount with the reason
    if mount -t fuse.vmsnapfs test:///default "$dir/t" -o failure_deadline=never 2>"$dir/err"; then
        fail "mount with a bad option succeeded"
    fi
    grep -q "invalid mount option" "$dir/err" || fail "mount: $(cat "$dir/err")"
    is_mounted "$dir/t" && fail "mounted despite a bad option"
    true
' || fail "mount(8) and fstab checks"

# SIGTERM: unmounts and exits 0
"$VMSNAPFS" -f test:///default "$dir/m" 2>"$dir/term.log" &
pid=$!
wait_until 10 is_mounted "$dir/m" || fail "no mount for the SIGTERM test"
ls "$dir/m/test" >/dev/null
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" = 0 ] || fail "exit status $status after SIGTERM"
is_mounted "$dir/m" && fail "still mounted after SIGTERM"
echo "PASS: $testname"
