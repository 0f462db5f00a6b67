#!/usr/bin/env bash
# snapshot-guest.sh: mkdir takes a consistent point-in-time snapshot of a
# real guest: a marker written before is in the snapshot's exported volume,
# one written after is not, e2fsck finds it clean; indications for a VM
# with an agent, without one, and stopped; virsh sees what vmsnapfs made;
# EEXIST, EAGAIN (consistency=required, nothing left), EBUSY (rmdir while a
# volume is open); rmdir removes it and its overlay.
. "${0%/*}/lib.sh"
requires_fuse
requires debugfs
requires e2fsck
use_guests

a=${TEST_PREFIX}agent
b=${TEST_PREFIX}noagent
guest_make_disk "$GUEST_DIR/a.qcow2" 128M qcow2
guest_make_disk "$GUEST_DIR/b.raw" 64M raw
guest_define "$a" --disk "$GUEST_DIR/a.qcow2:qcow2"
guest_define "$b" --disk "$GUEST_DIR/b.raw" --noagent
guest_start "$a"
guest_start "$b"
guest_wait_agent "$a"
guest_wait_console "$b" "vmsnapfs-guest: .*ready" 120 || fail "$b did not boot"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
A=$mnt/$a
B=$mnt/$b
out=$(workdir)/out
mkdir -p "$out"

# a marker before, the snapshot, a marker after
guest_exec "$a" 'echo one >/data/marker && sync' || fail "marker one"
mkdir "$A/snapshots/before"
guest_exec "$a" 'echo two >/data/marker && sync' || fail "marker two"
S=$A/snapshots/before
expect_content "$S/phase" Succeeded
[ "$(cat "$S/indications" | tr '\n' ' ')" = "Online GuestAgent " ] ||
    fail "indications with an agent: $(cat "$S/indications")"
[ -z "$(cat "$S/error")" ] || fail "error is not empty"
cp "$S/volumes/vda.img" "$out/before.raw"
e2fsck -fn "$out/before.raw" >"$out/fsck.log" 2>&1 || fail "e2fsck: $(cat "$out/fsck.log")"
[ "$(debugfs -R 'cat /marker' "$out/before.raw" 2>/dev/null)" = one ] ||
    fail "the snapshot does not hold the marker written before it"
# the live disk has the newer marker, and the VM runs on
guest_exec "$a" 'cat /data/marker' | grep -qx two || fail "guest lost its data"
grep -q '"freezeWindowMs": [0-9]' "$S/status.json" || fail "no freeze window in status.json"
grep -q "<name>$a</name>" "$S/domain.xml" || fail "no definition captured"

# virsh sees it, as an external disk-only snapshot
guest_virsh snapshot-list "$a" --name | grep -qx before || fail "virsh does not list it"
# (captured first: grep -q ends early, and virsh writing the rest into the
# closed pipe fails the pipeline under pipefail)
xml=$(guest_virsh snapshot-dumpxml "$a" before)
grep -q '<state>disk-snapshot</state>' <<<"$xml" || fail "virsh: not a disk snapshot"

# the same name again
expect_errno EEXIST mkdir "$S"

# clone: the line is checked (EINVAL), the new name must be free (EEXIST)
expect_errno EINVAL write "$S/clone" "Not_A_Name"
expect_errno EEXIST write "$S/clone" "$b"
expect_log "'$a': clone 'before' failed: "

# without an agent: crash-consistent, said so
mkdir "$B/snapshots/crash"
[ "$(cat "$B/snapshots/crash/indications" | tr '\n' ' ')" = "Online NoGuestAgent " ] ||
    fail "indications without an agent: $(cat "$B/snapshots/crash/indications")"

# stopped: no Online
guest_destroy "$b"
wait_until 2 grep -qx "shut off" "$B/state" || fail "b did not stop"
mkdir "$B/snapshots/offline"
[ -z "$(cat "$B/snapshots/offline/indications")" ] ||
    fail "indications of a stopped VM: $(cat "$B/snapshots/offline/indications")"
expect_content "$B/snapshots/offline/phase" Succeeded

# overlays are private
for f in "$GUEST_DIR"/*.before.*.qcow2 "$GUEST_DIR"/*.offline.*.qcow2; do
    [ "$(stat -c %a "$f")" = 600 ] || fail "$f is mode $(stat -c %a "$f")"
done

# rmdir while one of its volumes is open: EBUSY
exec 3<"$S/volumes/vda.img"
expect_errno EBUSY rmdir "$S"
exec 3<&-
expect_log "delete-snapshot 'before' failed: .*a volume of it is open"

# rmdir: gone from the tree and from libvirt, overlay merged and removed
rmdir "$S"
expect_errno ENOENT stat "$S"
guest_virsh snapshot-list "$a" --name | grep -qx before && fail "virsh still lists it"
ls "$GUEST_DIR"/*.before.qcow2 2>/dev/null && fail "overlay left after rmdir"
guest_exec "$a" 'cat /data/marker' | grep -qx two || fail "data lost by the merge"
rmdir "$B/snapshots/offline"
rmdir "$B/snapshots/crash"
[ -z "$(ls "$B/snapshots")" ] || fail "snapshots left: $(ls "$B/snapshots")"

# consistency=required and no agent: EAGAIN, and nothing left behind
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
guest_start "$b"
start_vmsnapfs qemu:///system "$mnt" -o consistency=required
expect_errno EAGAIN mkdir "$B/snapshots/strict"
expect_errno ENOENT stat "$B/snapshots/strict"
guest_virsh snapshot-list "$b" --name | grep -q strict && fail "EAGAIN left a snapshot"
ls "$GUEST_DIR"/*.strict.qcow2 2>/dev/null && fail "EAGAIN left an overlay"
grep -q "snapshot strict failed no guest agent connected and consistency=required" "$B/events" ||
    fail "no reason in events: $(cat "$B/events")"
expect_log "'$b': snapshot 'strict' failed: no guest agent"
# with the agent it still works under consistency=required
mkdir "$A/snapshots/strict-ok"
rmdir "$A/snapshots/strict-ok"
echo "PASS: $testname"
