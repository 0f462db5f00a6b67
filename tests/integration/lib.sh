# tests/integration/lib.sh: shared functions for integration tests (after
# nbdkit's tests/functions.sh). Source it first thing:
#
#   . "${0%/*}/lib.sh"
#
# Tests run under `set -euo pipefail`; exit 77 means skipped. Everything a
# test starts or creates is undone at exit, in reverse order (at_exit).

set -euo pipefail

testname=${0##*/}
testname=${testname%.sh}
srcdir=$(cd "${0%/*}/../.." && pwd)
: "${VMSNAPFS:=$srcdir/build/fs/vmsnapfs}"
: "${ERRNO_PROBE:=$srcdir/build/tests/integration/errno-probe}"

# A unique prefix for everything a test names (VMs, files): tests clean up
# their own, and never touch anything else.
TEST_PREFIX="vmsnapfs-t-$$-"

_at_exit=()
at_exit() { _at_exit+=("$*"); }
_run_at_exit() {
    local status=$? i
    for ((i = ${#_at_exit[@]} - 1; i >= 0; i--)); do
        eval "${_at_exit[i]}" || status=1
    done
    exit "$status"
}
trap _run_at_exit EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $testname: $*" >&2
    if [ -n "${VMSNAPFS_LOG:-}" ] && [ -s "$VMSNAPFS_LOG" ]; then
        echo "--- the last lines of $VMSNAPFS_LOG:" >&2
        tail -n 40 "$VMSNAPFS_LOG" >&2
    fi
    exit 1
}

skip() {
    echo "SKIP: $testname: $*" >&2
    exit 77
}

requires() {
    command -v "$1" >/dev/null 2>&1 || skip "needs $1"
}

requires_root() {
    [ "$(id -u)" = 0 ] || skip "needs root"
}

requires_fuse() {
    [ -c /dev/fuse ] || skip "needs /dev/fuse"
    requires fusermount3
}

# A private directory, removed at exit (made here, not in workdir(), which
# runs in $(...) subshells).
_workdir=$(mktemp -d "/tmp/${TEST_PREFIX}XXXXXX")
at_exit "rm -rf '$_workdir'"
workdir() { echo "$_workdir"; }
# the daemons' durable state (locks, records) is the test's own
export VMSNAPFS_STATE_DIR=$_workdir/state
# and kubectl's discovery cache: one kept in $HOME is keyed by host:port, so
# a fake API server on a port an earlier one used (with other resources,
# e.g. --no-clone) would be answered from the earlier one's discovery
export KUBECACHEDIR=$_workdir/kube-cache

# wait_until SECONDS CMD...: poll CMD every 50 ms until it succeeds.
wait_until() {
    local limit=$1 start
    shift
    start=$(date +%s.%N)
    while ! "$@" 2>/dev/null; do
        if awk -v s="$start" -v n="$(date +%s.%N)" -v l="$limit" \
            'BEGIN { exit !(n - s > l) }'; then
            return 1
        fi
        sleep 0.05
    done
}

# expect_errno ERRNO OP PATH [ARG]: the system call OP fails with ERRNO.
expect_errno() {
    local want=$1 got
    shift
    got=$("$ERRNO_PROBE" "$@")
    [ "$got" = "$want" ] || fail "$*: expected $want, got $got"
}

# expect_content FILE TEXT: FILE holds exactly TEXT and a newline.
expect_content() {
    local got
    got=$(cat "$1") || fail "cannot read $1"
    [ "$got" = "$2" ] || fail "$1: expected '$2', got '$got'"
    [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ] ||
        fail "$1: does not end with a newline"
}

# expect_images_clean DIR [WHAT]: qemu-img check finds every qcow2 in DIR
# clean (-U: images of running guests too).
expect_images_clean() {
    local f
    for f in "$1"/*.qcow2; do
        qemu-img check -U -q "$f" || fail "${2:+$2: }qemu-img check: $f"
    done
}

is_mounted() {
    grep -q " $1 fuse.vmsnapfs " /proc/mounts
}

# start_vmsnapfs SOURCE MOUNTPOINT [OPTIONS...]: the daemon in the
# foreground, in the background of the test; waits for the mount. At exit:
# unmounts, requires exit status 0 and a log without unexpected errors.
_vmsnapfs_n=0
start_vmsnapfs() {
    local source=$1 mnt=$2 log pid
    shift 2
    mkdir -p "$mnt"
    _vmsnapfs_n=$((_vmsnapfs_n + 1))
    log=$(workdir)/vmsnapfs-$_vmsnapfs_n.log
    "$VMSNAPFS" -f "$@" "$source" "$mnt" 2>"$log" &
    pid=$!
    VMSNAPFS_PID=$pid
    VMSNAPFS_LOG=$log
    at_exit "stop_vmsnapfs '$mnt' $pid '$log'"
    local i
    for ((i = 0; i < 200; i++)); do
        is_mounted "$mnt" && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "vmsnapfs died"; }
        sleep 0.05
    done
    cat "$log" >&2
    fail "no mount on $mnt after 10 s"
}

# Lines a test expects in the log (grep -E patterns), not counted as errors.
_expected_log=()
expect_log() { _expected_log+=("$1"); }

stop_vmsnapfs() {
    local mnt=$1 pid=$2 log=$3 status=0 line ok p
    if is_mounted "$mnt"; then
        fusermount3 -u "$mnt" || { fusermount3 -uz "$mnt"; status=1; }
    fi
    if kill -0 "$pid" 2>/dev/null; then
        wait "$pid" || { echo "vmsnapfs exited with status $?" >&2; status=1; }
    fi
    # unexpected errors or warnings in the log fail the test
    while IFS= read -r line; do
        case "$line" in *": error: "* | *": warning: "* | *Sanitizer* | *"runtime error"*) ;; *) continue ;; esac
        ok=
        for p in "${_expected_log[@]+"${_expected_log[@]}"}"; do
            if grep -qE -- "$p" <<<"$line"; then ok=1; fi
        done
        if [ -z "$ok" ]; then
            echo "unexpected log line: $line" >&2
            status=1
        fi
    done <"$log"
    if [ "$status" != 0 ]; then
        echo "--- $log:" >&2
        tail -n 100 "$log" >&2
    fi
    return "$status"
}

# use_guests: real guests on qemu:///system (tests/guest/guest.sh). Sets
# GUEST_DIR, a directory for disk images that QEMU can reach; at exit every
# domain named with TEST_PREFIX is destroyed and undefined.
use_guests() {
    requires_root
    requires virsh
    requires qemu-system-x86_64
    requires qemu-img
    # shellcheck source=../guest/guest.sh
    . "$srcdir/tests/guest/guest.sh"
    guest_build >/dev/null || fail "cannot build the test guest"
    libvirt_ensure_running || fail "libvirtd is not running and cannot be started"
    guest_cleanup_stale || true
    GUEST_DIR=/var/tmp/${TEST_PREFIX}disks
    mkdir -p "$GUEST_DIR"
    chmod 0755 "$GUEST_DIR"
    at_exit "rm -rf '$GUEST_DIR'"
    # the daemons' durable state (freeze records, restore plans, the files
    # vmsnapfs made) is the test's own, and goes with it
    export VMSNAPFS_STATE_DIR=$GUEST_DIR/state
    at_exit "guest_cleanup_prefix '$TEST_PREFIX'"
}

# use_fake_cluster: a fake Kubernetes API server with KubeVirt
# (tests/kube/fake-apiserver.py), stopped at exit. Sets KUBE_DIR (its CA,
# token, client certificate), KUBECONFIG (contexts fake: token, fake-cert:
# client certificate), KUBE_URL. Extra arguments go to the server.
use_fake_cluster() {
    requires python3
    requires openssl
    local i
    KUBE_DIR=$(workdir)/cluster
    # a second cluster in the same test: a directory of its own
    for ((i = 2; i < 10; i++)); do [ -e "$KUBE_DIR" ] || break; KUBE_DIR=$(workdir)/cluster-$i; done
    mkdir -p "$KUBE_DIR"
    python3 "$srcdir/tests/kube/fake-apiserver.py" --dir "$KUBE_DIR" \
        --port-file "$KUBE_DIR/port" "$@" 2>"$KUBE_DIR/server.log" &
    KUBE_PID=$!
    at_exit "kill $KUBE_PID 2>/dev/null; wait $KUBE_PID 2>/dev/null || true"
    for ((i = 0; i < 200; i++)); do
        [ -s "$KUBE_DIR/port" ] && break
        kill -0 "$KUBE_PID" 2>/dev/null || { cat "$KUBE_DIR/server.log" >&2; fail "the fake API server died"; }
        sleep 0.05
    done
    [ -s "$KUBE_DIR/port" ] || fail "the fake API server did not start"
    export KUBECONFIG=$KUBE_DIR/kubeconfig
    KUBE_URL=https://127.0.0.1:$(cat "$KUBE_DIR/port")
}

# kube_api METHOD PATH [BODY]: a request to the fake with its token (curl)
kube_api() {
    curl -sS --cacert "$KUBE_DIR/ca.crt" -H "Authorization: Bearer $(cat "$KUBE_DIR/token")" \
        -H 'Content-Type: application/json' -X "$1" ${3:+--data "$3"} "$KUBE_URL$2"
}
