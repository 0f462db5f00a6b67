#!/usr/bin/env bash
# volume-errors.sh: what goes wrong with volumes gives the SPEC's errno and
# a reason: writes (EROFS), chmod (EPERM), a backing file gone (EIO, with
# the reason in events and the log), a VM started while its stopped disk
# is open (the reader fails with EIO, never gets a torn image), and an
# unmount with a live view open leaves no backup job and no helper behind.
. "${0%/*}/lib.sh"
requires_fuse
requires python3
use_guests

d=$GUEST_DIR
vm=${TEST_PREFIX}err
guest_make_disk "$d/e.qcow2" 64M qcow2
guest_define "$vm" --disk "$d/e.qcow2:qcow2"
gone=${TEST_PREFIX}gone
guest_make_disk "$d/base.raw" 32M raw
qemu-img create -q -f qcow2 -b "$d/base.raw" -F raw "$d/over.qcow2"
guest_define "$gone" --disk "$d/over.qcow2:qcow2"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
img=$mnt/$vm/volumes/vda.img

# read-only images
expect_errno EROFS open-w "$img"
expect_errno EROFS write "$img" data
expect_errno EROFS truncate "$img"
expect_errno EPERM chmod "$img"
expect_errno EROFS create "$mnt/$vm/volumes/new.img"
expect_errno EROFS unlink "$img"

# the backing file of a chain is gone: EIO, and why, in events and the log
rm "$d/base.raw"
expect_errno EIO read "$mnt/$gone/volumes/vda.img"
grep -q "open-volume vda failed" "$mnt/$gone/events" ||
    fail "no reason in events: $(cat "$mnt/$gone/events")"
grep -q "qemu-img failed: .*base.raw" "$VMSNAPFS_LOG" || fail "no reason in the log"
expect_log "qemu-img failed: .*base.raw"
expect_log "'$gone': open-volume 'vda' failed"

# a stopped disk's view, then the VM starts and writes: reads fail (EIO)
exec 3<"$img"
head -c 1048576 <&3 >/dev/null
guest_start "$vm"
guest_wait_agent "$vm"
guest_exec "$vm" 'dd if=/dev/urandom of=/data/new bs=1M count=8 2>/dev/null && sync' ||
    fail "guest write"
python3 - <<'PY' || fail "a read after the VM changed the disk did not fail with EIO"
import errno, os
try:
    os.pread(3, 1 << 20, 32 << 20)
except OSError as e:
    raise SystemExit(0 if e.errno == errno.EIO else "errno %d" % e.errno)
raise SystemExit("the read succeeded")
PY
exec 3<&-
grep -q "read-volume vda failed the disk changed while it was being read" "$mnt/$vm/events" ||
    fail "no reason for the failed read in events"
expect_log "changed under an open view"
expect_log "'$vm': read-volume 'vda' failed"

# a live view open at unmount (SIGTERM): its backup job ends with the daemon
exec 3<"$img"
head -c 4096 <&3 >/dev/null
virsh -c qemu:///system domjobinfo "$vm" | grep -q 'Job type: *Unbounded' ||
    fail "no backup job behind the open live view"
kill -TERM "$VMSNAPFS_PID"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error after SIGTERM"
exec 3<&-
job=$(virsh -c qemu:///system domjobinfo "$vm")
[[ $job == *"Job type:"*None* ]] || fail "backup job left after the daemon stopped: $job"
ls -d "$VMSNAPFS_STATE_DIR"/live-* 2>/dev/null && fail "live view directories left behind"
pgrep -f "qemu-nbd.*$d" && fail "qemu-nbd left behind"
state=$(guest_agent "$vm" '{"execute":"guest-fsfreeze-status"}')
[[ $state == *thawed* ]] || fail "guest not thawed: $state"

# SIGKILL with a live view open leaves the backup job running; the next
# vmsnapfs ends it at start
start_vmsnapfs qemu:///system "$mnt"
exec 3<"$img"
head -c 4096 <&3 >/dev/null
kill -KILL "$VMSNAPFS_PID"
wait "$VMSNAPFS_PID" 2>/dev/null || true
exec 3<&-
fusermount3 -uz "$mnt"
virsh -c qemu:///system domjobinfo "$vm" | grep -q 'Job type: *Unbounded' ||
    fail "no backup job left by the killed daemon (the check proves nothing)"
expect_log "ending the backup job of a vmsnapfs that is gone"
start_vmsnapfs qemu:///system "$mnt"
job=$(virsh -c qemu:///system domjobinfo "$vm")
[[ $job == *"Job type:"*None* ]] ||
    fail "the stale backup job still runs after a new start: $job"
ls -d "$VMSNAPFS_STATE_DIR"/live-* 2>/dev/null && fail "stale live view directory left"
cp "$img" "$(workdir)/after.raw" || fail "a live view after the clean-up"
echo "PASS: $testname"
