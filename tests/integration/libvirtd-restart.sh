#!/usr/bin/env bash
# libvirtd-restart.sh: when libvirtd goes away, calls fail with EIO and a
# logged reason (no crash, no hang); once it is back the mount works again,
# events included.
. "${0%/*}/lib.sh"
requires_fuse
use_guests

vm=${TEST_PREFIX}rs
guest_make_disk "$GUEST_DIR/rs.raw" 16M raw
guest_define "$vm" --disk "$GUEST_DIR/rs.raw"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
expect_content "$mnt/$vm/state" "shut off"
expect_log "connection to 'qemu:///system' (closed|is dead)"
expect_log "no connection to 'qemu:///system'; reconnecting"
expect_log "\\[libvirt\\]: error: list domains"
restart_libvirtd() { libvirt_ensure_running >/dev/null 2>&1 || true; }
at_exit restart_libvirtd

pkill -x libvirtd
wait_until 15 sh -c '! pgrep -x libvirtd >/dev/null' || fail "libvirtd did not stop"

# the tree answers EIO while libvirtd is away, quickly, and the daemon lives
wait_until 5 sh -c "[ \"\$('$ERRNO_PROBE' stat '$mnt/$vm/state')\" = EIO ]" ||
    fail "no EIO while libvirtd is away: $("$ERRNO_PROBE" stat "$mnt/$vm/state")"
start=$(date +%s)
expect_errno EIO stat "$mnt/$vm"
[ $(($(date +%s) - start)) -le 2 ] || fail "a call without libvirtd took too long"
kill -0 "$VMSNAPFS_PID" || fail "vmsnapfs died while libvirtd was away"

libvirt_ensure_running || fail "cannot restart libvirtd"
wait_until 10 grep -qx "shut off" "$mnt/$vm/state" ||
    fail "the mount did not recover after libvirtd came back"

# events work again after the reconnect
vm2=${TEST_PREFIX}rs2
guest_define "$vm2" --disk "$GUEST_DIR/rs.raw"
wait_until 1 test -d "$mnt/$vm2" || fail "VM defined after the restart not shown within 1 s"
guest_virsh undefine "$vm2" >/dev/null
wait_until 1 sh -c "! test -e '$mnt/$vm2'" || fail "undefine after the restart not shown"
kill -0 "$VMSNAPFS_PID" || fail "vmsnapfs died"
grep -q "connected to 'qemu:///system' again" "$VMSNAPFS_LOG" ||
    fail "the reconnect was not logged"
echo "PASS: $testname"
