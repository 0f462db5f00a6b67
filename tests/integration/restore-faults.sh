#!/usr/bin/env bash
# restore-faults.sh: restore and clone when things go wrong around them.
# A libvirtd restart while StopTarget stops the VM leaves it running again
# (the policy's promise), never stopped; a clone killed half-way leaves no
# overlay once the next daemon has started; opening a volume and starting
# an operation exclude each other at once (EBUSY for the second, never EIO
# later).
. "${0%/*}/lib.sh"
requires_fuse
use_guests

v=${TEST_PREFIX}f
guest_make_disk "$GUEST_DIR/f.qcow2" 128M qcow2
guest_define "$v" --disk "$GUEST_DIR/f.qcow2:qcow2"
guest_start "$v"
guest_wait_agent "$v"
mnt=$(workdir)/mnt
V=$mnt/$v
marker() { guest_exec "$v" 'cat /data/marker' | tr -d '\r\n'; }
vm_running() { [ "$(guest_state "$v")" = running ]; }
no_plan() { ! ls "$VMSNAPFS_STATE_DIR"/restore/*.json >/dev/null 2>&1; }
restart_libvirtd() { libvirt_ensure_running >/dev/null 2>&1 || true; }
at_exit restart_libvirtd
expect_log "VMSNAPFS_FAULT="
expect_log "connection to 'qemu:///system' (closed|is dead)|no connection to 'qemu:///system'"
expect_log "\\[(libvirt|ops|restore|events|clone|volume|layers)\\]: (error|warning): "

start_vmsnapfs qemu:///system "$mnt"
guest_exec "$v" 'echo one >/data/marker && sync' || fail "marker one"
mkdir "$V/snapshots/s1"
guest_exec "$v" 'echo two >/data/marker && sync' || fail "marker two"

# 1. opening a volume and starting an operation exclude each other
exec 3<"$V/volumes/vda.img"          # a live view: a backup job runs
expect_errno EBUSY mkdir "$V/snapshots/busy"
expect_errno EBUSY rmdir "$V/snapshots/s1"
expect_errno EBUSY write "$V/restore" $'s1 policy=StopTarget\n'
exec 3<&-
# (the kernel sends the release after close() returns: the view and its
# backup job end a moment later)
no_live() { ! ls -d "$VMSNAPFS_STATE_DIR"/live-* >/dev/null 2>&1; }
wait_until 10 no_live || fail "the backup job of the closed view did not end"
sleep 0.5
# an operation that holds the VM (waiting for it to stop) keeps volumes
# shut, and a second writer of restore out
(echo 's1 policy=WaitGracePeriod:4s' >"$V/restore") 2>/dev/null &
wpid=$!
wait_until 3 grep -q "waiting for the VM to stop" "$VMSNAPFS_LOG" ||
    fail "the restore did not wait: $(tail -n 3 "$V/events")"
expect_errno EBUSY read "$V/volumes/vda.img"
expect_errno EBUSY read "$V/snapshots/s1/volumes/vda.img"
# a second writer of restore: EBUSY at once (the kernel would hold its
# write back until the first ends, and then run it)
expect_errno EBUSY write "$V/restore" $'s1 policy=StopTarget\n'
grep -q "restore - failed another line written to this file runs now" "$V/events" ||
    fail "no reason for the second writer: $(tail -n 2 "$V/events")"
wait "$wpid" && fail "the restore of a running VM under WaitGracePeriod:4s succeeded"
expect_errno OK read "$V/snapshots/s1/volumes/vda.img"
grep -q "read-volume\|open-volume vda failed" "$V/events" || true

# 2. a libvirtd restart while StopTarget stops the VM: it runs again after
(echo 's1 policy=StopTarget' >"$V/restore") 2>/dev/null &
rpid=$!
wait_until 5 grep -q "stopping the VM to restore 's1'" "$VMSNAPFS_LOG" || fail "the restore did not stop the VM"
pkill -x libvirtd || true
wait_until 15 sh -c '! pgrep -x libvirtd >/dev/null' || fail "libvirtd did not stop"
sleep 2
libvirt_ensure_running || fail "cannot restart libvirtd"
wait "$rpid" || true
wait_until 120 vm_running || fail "the VM was left $(guest_state "$v") after a libvirtd restart during StopTarget"
wait_until 60 no_plan || fail "the restore plan stays: $(ls "$VMSNAPFS_STATE_DIR"/restore)"
guest_wait_agent "$v"
got=$(marker)
[ "$got" = one ] || [ "$got" = two ] || fail "the guest sees '$got'"
kill -0 "$VMSNAPFS_PID" || fail "vmsnapfs died"

# 3. a clone killed after its overlays were made: the next daemon reclaims
# them (no file, no record, no VM)
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
c=${TEST_PREFIX}c
files_before=$(ls "$GUEST_DIR"/*.qcow2 | wc -l)
log=$(workdir)/killed.log
VMSNAPFS_FAULT=clone-overlays "$VMSNAPFS" -f qemu:///system "$mnt" 2>"$log" &
kpid=$!
wait_until 10 is_mounted "$mnt" || fail "no mount"
(echo "$c" >"$V/snapshots/s1/clone") 2>/dev/null && fail "the clone finished although the daemon was to be killed"
wait "$kpid" && fail "the daemon was not killed"
grep -q "VMSNAPFS_FAULT=clone-overlays" "$log" || fail "not killed at clone-overlays: $(cat "$log")"
fusermount3 -uz "$mnt"
[ "$(ls "$GUEST_DIR"/*.qcow2 | wc -l)" = $((files_before + 1)) ] ||
    fail "the killed clone made no overlay: the test proves nothing"
start_vmsnapfs qemu:///system "$mnt"
no_record() { ! ls "$VMSNAPFS_STATE_DIR"/clone/*.json >/dev/null 2>&1; }
wait_until 30 no_record || fail "the clone record stays"
[ "$(ls "$GUEST_DIR"/*.qcow2 | wc -l)" = "$files_before" ] ||
    fail "the killed clone's overlay is left: $(ls "$GUEST_DIR")"
guest_virsh dominfo "$c" >/dev/null 2>&1 && fail "a half-made clone VM exists"
# the name is free again, and a clone works
echo "$c" >"$V/snapshots/s1/clone" || fail "clone after the kill: $(tail -n 2 "$V/events")"
[ "$(stat -c %a "$(guest_virsh domblklist "$c" | awk '$1 == "vda" { print $2 }')")" = 600 ] ||
    fail "the clone's disk is not private"
expect_images_clean "$GUEST_DIR"
echo "PASS: $testname"
