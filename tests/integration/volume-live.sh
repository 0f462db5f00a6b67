#!/usr/bin/env bash
# volume-live.sh: a running VM's volume, read while the guest writes
# continuously, is one point-in-time view from open to last close: the
# copy is clean (e2fsck -fn), holds what was written before the open and
# not what came after, concurrent readers share the view, the guest is
# thawed afterwards, and the backup job behind the view ends at the close.
. "${0%/*}/lib.sh"
requires_fuse
requires debugfs
requires e2fsck
use_guests

vm=${TEST_PREFIX}live
guest_make_disk "$GUEST_DIR/live.qcow2" 256M qcow2
guest_define "$vm" --disk "$GUEST_DIR/live.qcow2:qcow2"
guest_start "$vm"
guest_wait_agent "$vm"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
img=$mnt/$vm/volumes/vda.img
out=$(workdir)/out
mkdir -p "$out"

# the guest writes all the time from now on
guest_exec "$vm" 'echo before >/data/marker && sync &&
    (while :; do dd if=/dev/urandom of=/data/churn bs=64k count=32 conv=fsync 2>/dev/null;
     cp /data/churn /data/churn2; done) </dev/null >/dev/null 2>&1 &' ||
    fail "cannot start the writer in the guest"
sleep 1

# a plain cp of the live disk: clean, with the marker
cp "$img" "$out/a.raw"
e2fsck -fn "$out/a.raw" >"$out/fsck.log" 2>&1 || fail "e2fsck of a live copy: $(cat "$out/fsck.log")"
[ "$(debugfs -R 'cat /marker' "$out/a.raw" 2>/dev/null)" = before ] ||
    fail "marker written before the copy is missing"

# the guest is thawed and writes on
state=$(guest_agent "$vm" '{"execute":"guest-fsfreeze-status"}')
[[ $state == *thawed* ]] || fail "guest not thawed after the copy: $state"
guest_exec "$vm" 'echo after-first >/data/probe && sync' || fail "guest cannot write"

# one view from open to last close: a reader opens, the guest writes a
# new marker, a second reader opens while the first is open (shares the
# view), and neither sees the new marker; the two copies are identical
exec 3<"$img"
guest_exec "$vm" 'echo later >/data/marker && sync' || fail "second marker"
cp "$img" "$out/b.raw"
cat <&3 >"$out/c.raw"
exec 3<&-
cmp "$out/b.raw" "$out/c.raw" || fail "two readers of one view got different data"
[ "$(debugfs -R 'cat /marker' "$out/b.raw" 2>/dev/null)" = before ] ||
    fail "a write made after the open shows in the view"
e2fsck -fn "$out/b.raw" >"$out/fsck.log" 2>&1 || fail "e2fsck of the shared view"

# the last close ended the backup job and removed its files
wait_until 5 sh -c "virsh -c qemu:///system domjobinfo '$vm' | grep -q 'Job type: *None'" ||
    fail "backup job still active: $(virsh -c qemu:///system domjobinfo "$vm")"
ls -d "$VMSNAPFS_STATE_DIR"/live-* 2>/dev/null && fail "live view directories left behind"

# a new open is a new point in time: the new marker is there
cp "$img" "$out/d.raw"
[ "$(debugfs -R 'cat /marker' "$out/d.raw" 2>/dev/null)" = later ] ||
    fail "a new view does not show the newer marker"
state=$(guest_agent "$vm" '{"execute":"guest-fsfreeze-status"}')
[[ $state == *thawed* ]] || fail "guest not thawed at the end: $state"
[ "$(guest_state "$vm")" = running ] || fail "the VM stopped"
echo "PASS: $testname"
