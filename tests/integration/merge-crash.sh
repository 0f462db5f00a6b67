#!/usr/bin/env bash
# merge-crash.sh: an rmdir interrupted while it merges (SIGKILL of the
# daemon at the start of the block commit, SIGKILL before anything changed,
# a libvirtd restart in the middle): a snapshot either disappears with its
# merge or keeps exactly its content; the merge is finished by the next
# daemon or the running one after the reconnect; no block job is left, the
# chain does not grow, later mkdir/rmdir work, a block job in flight gives
# EBUSY (not EIO), qemu-img check is clean.
. "${0%/*}/lib.sh"
requires_fuse
use_guests

v=${TEST_PREFIX}m
guest_make_disk "$GUEST_DIR/m.qcow2" 256M qcow2
guest_define "$v" --disk "$GUEST_DIR/m.qcow2:qcow2"
guest_start "$v"
guest_wait_agent "$v"
mnt=$(workdir)/mnt
V=$mnt/$v
marker() { guest_exec "$v" 'cat /data/marker' | tr -d '\r\n'; }
no_record() { ! ls "$VMSNAPFS_STATE_DIR"/merge/*.json >/dev/null 2>&1; }
no_job() { guest_virsh blockjob "$v" vda 2>&1 | grep -c "No current block job" >/dev/null; }
chain_depth() {
    qemu-img info -U --backing-chain "$(guest_virsh domblklist "$v" | awk '$1 == "vda" { print $2 }')" |
        grep -c '^image:'
}
snap_hash() { sha256sum <"$V/snapshots/$1/volumes/vda.img" | cut -d' ' -f1; }
# data after the snapshot, so that the merge has something to copy
dirty() { guest_exec "$v" "echo $1 >/data/marker && dd if=/dev/urandom of=/data/fill bs=1M count=24 2>/dev/null && sync"; }

restart_libvirtd() { libvirt_ensure_running >/dev/null 2>&1 || true; }
at_exit restart_libvirtd
expect_log "VMSNAPFS_FAULT="
expect_log "finished the merge of deleted snapshot 's1'"
expect_log "an rmdir of snapshot 's2' was interrupted before it changed anything"
expect_log "reclaimed what a mkdir of 's6' killed half-way left"
expect_log "connection to 'qemu:///system' (closed|is dead)|no connection to 'qemu:///system'"
expect_log "\\[(libvirt|snapshot|events|layers)\\]: (error|warning): "

# 1. SIGKILL right after the block commit began: the snapshot goes
guest_exec "$v" 'echo one >/data/marker && sync' || fail "marker one"
start_vmsnapfs qemu:///system "$mnt"
mkdir "$V/snapshots/s1"
dirty two || fail "marker two"
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
log=$(workdir)/killed-1.log
VMSNAPFS_FAULT=merge-started "$VMSNAPFS" -f qemu:///system "$mnt" 2>"$log" &
kpid=$!
wait_until 10 is_mounted "$mnt" || fail "no mount"
rmdir "$V/snapshots/s1" 2>/dev/null && fail "rmdir finished although the daemon was to be killed"
wait "$kpid" && fail "the daemon was not killed"
grep -q "VMSNAPFS_FAULT=merge-started" "$log" || fail "not killed at merge-started: $(cat "$log")"
fusermount3 -uz "$mnt"
start_vmsnapfs qemu:///system "$mnt"
wait_until 60 no_record || fail "the merge record stays: $(tail -5 "$VMSNAPFS_LOG")"
wait_until 10 no_job || fail "a block job is left: $(guest_virsh blockjob "$v" vda 2>&1)"
expect_errno ENOENT stat "$V/snapshots/s1"
[ "$(guest_virsh snapshot-list "$v" --name | grep -cx s1)" = 0 ] || fail "libvirt still lists s1"
[ "$(chain_depth)" = 1 ] || fail "the chain did not shrink: depth $(chain_depth)"
[ "$(marker)" = two ] || fail "the guest sees '$(marker)' after the finished merge"
grep -q "finished the merge of deleted snapshot 's1'" "$VMSNAPFS_LOG" ||
    fail "the new daemon did not say it finished the merge"
expect_images_clean "$GUEST_DIR" "after a killed merge"

# 2. SIGKILL after the record, before anything changed: the snapshot stays,
# exactly as it was
mkdir "$V/snapshots/s2"
dirty three || fail "marker three"
before=$(snap_hash s2)
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
log=$(workdir)/killed-2.log
VMSNAPFS_FAULT=merge-recorded "$VMSNAPFS" -f qemu:///system "$mnt" 2>"$log" &
kpid=$!
wait_until 10 is_mounted "$mnt" || fail "no mount"
rmdir "$V/snapshots/s2" 2>/dev/null && fail "rmdir finished although the daemon was to be killed"
wait "$kpid" && fail "the daemon was not killed"
fusermount3 -uz "$mnt"
start_vmsnapfs qemu:///system "$mnt"
wait_until 30 no_record || fail "the merge record stays"
expect_content "$V/snapshots/s2/phase" Succeeded
[ "$(snap_hash s2)" = "$before" ] || fail "s2 changed its content"
[ "$(chain_depth)" = 2 ] || fail "chain depth $(chain_depth), not 2"
rmdir "$V/snapshots/s2"
[ "$(chain_depth)" = 1 ] || fail "chain depth $(chain_depth) after rmdir s2"

# 3. a block job in flight: EBUSY for mkdir and rmdir, not EIO
mkdir "$V/snapshots/s3"
guest_virsh blockcopy "$v" vda "$GUEST_DIR/copy.qcow2" --transient-job --wait --timeout 60 \
    >/dev/null 2>&1 || guest_virsh blockcopy "$v" vda "$GUEST_DIR/copy.qcow2" --transient-job >/dev/null
expect_errno EBUSY mkdir "$V/snapshots/s4"
expect_errno EBUSY rmdir "$V/snapshots/s3"
guest_virsh blockjob "$v" vda --abort >/dev/null
wait_until 10 no_job || fail "the copy job did not end"
rm -f "$GUEST_DIR/copy.qcow2"

# 4. libvirtd restarts in the middle of the merge: either the snapshot
# keeps its content or it goes and the merge is finished after the
# reconnect
dirty four || fail "marker four"
before=$(snap_hash s3)
(rmdir "$V/snapshots/s3" 2>/dev/null; echo $? >"$(workdir)/rmdir-rc") &
rpid=$!
sleep 0.1
pkill -x libvirtd || true
wait_until 15 sh -c '! pgrep -x libvirtd >/dev/null' || fail "libvirtd did not stop"
libvirt_ensure_running || fail "cannot restart libvirtd"
wait "$rpid" || true
wait_until 60 no_record || fail "the merge record stays after the reconnect: $(tail -5 "$VMSNAPFS_LOG")"
wait_until 30 no_job || fail "a block job is left after the reconnect"
if [ -d "$V/snapshots/s3" ]; then
    [ "$(snap_hash s3)" = "$before" ] || fail "s3 is listed but its content changed"
    rmdir "$V/snapshots/s3"
fi
wait_until 10 sh -c "[ \"\$('$ERRNO_PROBE' stat '$V/snapshots/s3')\" = ENOENT ]" ||
    fail "s3 still there"
[ "$(chain_depth)" = 1 ] || fail "chain depth $(chain_depth) after the interrupted merge"
[ "$(marker)" = four ] || fail "the guest sees '$(marker)'"

# a snapshot made while libvirt's answer is lost (libvirtd restarting):
# mkdir fails (EIO), but what libvirt made stays whole: the VM goes on
# writing to its new overlay, which must not be removed (it once was)
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
VMSNAPFS_FAULT=snapshot-answer-lost start_vmsnapfs qemu:///system "$mnt"
expect_errno EIO mkdir "$V/snapshots/s6"
grep -q "snapshot s6 failed lost libvirt while it took the snapshot" "$V/events" ||
    fail "no reason in events: $(tail -n 2 "$V/events")"
top=$(guest_virsh domblklist "$v" | awk '$1 == "vda" { print $2 }')
[ -f "$top" ] || fail "the disk the VM writes to was removed: $top"
guest_exec "$v" 'echo five >/data/marker && sync' || fail "the guest cannot write"
wait_until 30 sh -c "! ls '$VMSNAPFS_STATE_DIR'/snapshot/*.json >/dev/null 2>&1" ||
    fail "the record of the snapshot stays"
[ -f "$top" ] || fail "the recovery removed the disk the VM writes to"
[ "$(guest_virsh snapshot-list "$v" --name | grep -cx s6)" = 1 ] || fail "libvirt lost s6"
wait_until 10 test -d "$V/snapshots/s6" || fail "s6 is not listed"
[ "$(marker)" = five ] || fail "the guest sees '$(marker)'"
rmdir "$V/snapshots/s6" || fail "rmdir s6"
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
start_vmsnapfs qemu:///system "$mnt"

# and the VM works as before: snapshot, rmdir, no stray files
mkdir "$V/snapshots/s5"
rmdir "$V/snapshots/s5"
[ "$(chain_depth)" = 1 ] || fail "chain depth $(chain_depth) at the end"
[ "$(ls "$GUEST_DIR"/*.qcow2 | wc -l)" = 1 ] || fail "stray images: $(ls "$GUEST_DIR")"
guest_exec "$v" 'echo end >/data/end && sync' || fail "the guest cannot write"
expect_images_clean "$GUEST_DIR" "at the end"
echo "PASS: $testname"
