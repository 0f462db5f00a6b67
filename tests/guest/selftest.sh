#!/bin/bash
# selftest.sh — end-to-end check of the real-guest test rig (guest.sh):
# builds (or reuses) the guest, makes sure libvirtd runs, boots a TCG guest
# with a raw and a qcow2 ext4 disk, runs commands in it through the guest
# agent, freezes and thaws its filesystems (with a 1 s fsfreeze hook),
# destroys it, checks the data on the host, boots it again, shuts it down
# cleanly, undefines it and removes its files. Exits 0 only if all worked;
# cleans up on every path.
#
# Usage: tests/guest/selftest.sh   (as root)
set -uo pipefail

here=$(CDPATH="" cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=tests/guest/guest.sh
source "$here/guest.sh"

prefix="vmsnapfs-t-$$-"
name="${prefix}rig"
workdir=""
passed=0
failed=0
frozen=0

now_ms() { date +%s%3N; }
# secs MS — milliseconds as seconds with one decimal
secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }

cleanup() {
    local rc=$? leftover
    trap - EXIT
    # A frozen guest must be thawed on every path (destroy follows anyway).
    if ((frozen)); then
        guest_virsh domfsthaw "$name" >/dev/null 2>&1 || true
    fi
    guest_cleanup_prefix "$prefix" || rc=1
    if [[ -n "$workdir" ]]; then
        rm -rf -- "$workdir" || rc=1
    fi
    # Nothing may be left behind.
    leftover=$(guest_virsh list --all --name 2>/dev/null | grep -F -- "$prefix" || true)
    if [[ -n "$leftover" ]]; then
        echo "selftest: left behind domains: $leftover" >&2
        rc=1
    fi
    if [[ -e "$(guest_console_log "$name")" || -e "/var/log/libvirt/qemu/$name.log" ]]; then
        echo "selftest: left behind log files of $name" >&2
        rc=1
    fi
    if ((rc != 0 && failed == 0)); then
        failed=1
    fi
    echo "selftest: $passed passed, $failed failed"
    exit "$rc"
}
trap cleanup EXIT
# make INT/TERM run the EXIT trap too
trap 'exit 130' INT
trap 'exit 143' TERM

# ok DESCRIPTION — count a passed check.
ok() {
    passed=$((passed + 1))
    echo "ok   $1"
}
# fail DESCRIPTION — count a failed check and stop (the trap cleans up).
fail() {
    failed=$((failed + 1))
    echo "FAIL $1" >&2
    guest_console_tail "$name" >&2 2>/dev/null || true
    exit 1
}
# check DESCRIPTION COMMAND... — run COMMAND, pass or fail on its status.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else fail "$desc"; fi
}
# expect DESCRIPTION EXPECTED ACTUAL
expect() {
    if [[ "$2" == "$3" ]]; then
        ok "$1"
    else
        fail "$1: expected '$2', got '$3'"
    fi
}

# fsck_clean IMAGE — e2fsck finds nothing to fix (read-only check)
fsck_clean() { e2fsck -fn "$1" >/dev/null 2>&1; }

if [[ $EUID -ne 0 ]]; then
    echo "selftest: must run as root" >&2
    exit 1
fi

# --- build and libvirt --------------------------------------------------------
t0=$(now_ms)
check "guest_build ($(_guest_cache))" guest_build
echo "     build/reuse took $(secs $(($(now_ms) - t0))) s (kernel $GUEST_KVER)"
t0=$(now_ms)
check "libvirt_ensure_running" libvirt_ensure_running
check "libvirt_ensure_running again" libvirt_ensure_running
check "guest_cleanup_stale (domains of killed runs)" guest_cleanup_stale
echo "     libvirt ready after $(secs $(($(now_ms) - t0))) s"

# --- disks ----------------------------------------------------------------------
# /var/tmp and a 0755 directory: QEMU runs as libvirt-qemu and must reach it.
workdir=$(mktemp -d /var/tmp/vmsnapfs-selftest.XXXXXX) || fail "mktemp"
chmod 0755 "$workdir"
raw=$workdir/data.raw
qcow=$workdir/data.qcow2
check "guest_make_disk raw 64M" guest_make_disk "$raw" 64M
check "guest_make_disk qcow2 64M" guest_make_disk "$qcow" 64M qcow2
expect "qcow2 image format" "file format: qcow2" \
    "$(qemu-img info "$qcow" | grep '^file format:')"

# --- define, boot -------------------------------------------------------------
check "guest_define $name" guest_define "$name" --disk "$raw" \
    --disk "$qcow:qcow2" --cmdline freezehook_sleep=1
out=$(guest_define "$name" --disk "$raw" --disk "$qcow:qcow2" \
    --cmdline freezehook_sleep=1 2>&1)
expect "guest_define prints nothing (redefine)" "" "$out"
check "guest_start" guest_start "$name"
check "guest_wait_agent" guest_wait_agent "$name" 120
boot1_ms=$(($(now_ms) - GUEST_START_MS))
echo "     boot to agent: $(secs "$boot1_ms") s"

# --- guest_exec -----------------------------------------------------------------
expect "guest_exec stdout" "hello world" "$(guest_exec "$name" 'echo hello world')"
guest_exec "$name" 'exit 3'
expect "guest_exec exit code" 3 "$?"
expect "guest_exec stderr kept apart" "" "$(guest_exec "$name" 'echo oops >&2' 2>/dev/null)"
expect "guest_exec quoting" "a'b\"c\\d \$HOME" \
    "$(guest_exec "$name" "printf '%s' 'a'\\''b\"c\\d \$HOME'")"
expect "guest_exec_input" "3" "$(printf 'abc' | guest_exec_input "$name" 'wc -c')"
expect "/data is the ext4 raw disk" "/dev/vda /data ext4" \
    "$(guest_exec "$name" "awk '\$2 == \"/data\" {print \$1, \$2, \$3}' /proc/mounts")"
marker="vmsnapfs-selftest-$$-$RANDOM"
check "write marker files" guest_exec "$name" \
    "echo '$marker' > /data/marker && echo '$marker' > /mnt/vdb/marker && sync"
expect "read marker back" "$marker" "$(guest_exec "$name" 'cat /data/marker')"

# --- fsfreeze ---------------------------------------------------------------------
t0=$(now_ms)
out=$(guest_virsh domfsfreeze "$name" 2>&1) && frozen=1
freeze_ms=$(($(now_ms) - t0))
expect "virsh domfsfreeze" "Froze 2 filesystem(s)" "$out"
expect "agent says frozen" '{"return":"frozen"}' \
    "$(guest_agent "$name" '{"execute":"guest-fsfreeze-status"}')"
if ((freeze_ms >= 1000)); then
    ok "freeze waited for the 1 s hook ($(secs "$freeze_ms") s)"
else
    fail "freeze took only $freeze_ms ms despite freezehook_sleep=1"
fi
out=$(guest_virsh domfsthaw "$name" 2>&1) && frozen=0
expect "virsh domfsthaw" "Thawed 2 filesystem(s)" "$out"
expect "agent says thawed" '{"return":"thawed"}' \
    "$(guest_agent "$name" '{"execute":"guest-fsfreeze-status"}')"
expect "fsfreeze hook ran" "freeze start,freeze end,thaw start,thaw end," \
    "$(guest_exec "$name" "awk '{printf \"%s %s,\", \$2, \$3}' /run/fsfreeze-hook.log")"
check "write after thaw" guest_exec "$name" 'echo after > /data/after && sync'

# --- destroy, look at the disks on the host ---------------------------------------
check "guest_destroy" guest_destroy "$name"
expect "state after destroy" "shut off" "$(guest_state "$name")"
check "guest_destroy when stopped" guest_destroy "$name"
expect "raw disk owner restored" "root" "$(stat -c %U "$raw")"
expect "marker in raw image (debugfs)" "$marker" \
    "$(debugfs -R 'cat /marker' "$raw" 2>/dev/null)"
qemu-img convert -f qcow2 -O raw "$qcow" "$workdir/qcow-as.raw" \
    || fail "qemu-img convert"
expect "marker in qcow2 image" "$marker" \
    "$(debugfs -R 'cat /marker' "$workdir/qcow-as.raw" 2>/dev/null)"
rm -f "$workdir/qcow-as.raw"

# --- second boot, clean shutdown --------------------------------------------------
check "guest_start (second boot)" guest_start "$name"
check "guest_wait_agent (second boot)" guest_wait_agent "$name" 120
boot2_ms=$(($(now_ms) - GUEST_START_MS))
echo "     boot to agent: $(secs "$boot2_ms") s"
expect "data survived destroy" "$marker after" \
    "$(guest_exec "$name" 'cat /data/marker /data/after' | paste -sd ' ')"
check "guest_shutdown (agent)" guest_shutdown "$name" 60
check "clean ext4 after shutdown" fsck_clean "$raw"

# --- undefine ---------------------------------------------------------------------
check "guest_undefine" guest_undefine "$name"
if guest_virsh dominfo "$name" >/dev/null 2>&1; then
    fail "$name still defined"
else
    ok "$name no longer defined"
fi
check "guest_cleanup_prefix (nothing left)" guest_cleanup_prefix "$prefix"
echo "     timings: boot-to-agent $(secs "$boot1_ms") s and $(secs "$boot2_ms") s, freeze with 1 s hook $(secs "$freeze_ms") s"
# the EXIT trap removes $workdir and checks that nothing is left
