#!/usr/bin/env bash
# snapshot-cycles.sh: repeated snapshot/rmdir cycles keep disk chains short
# (depth <= 3) and an older snapshot's content byte-identical, on a running
# VM (block commit) and a stopped one (qemu-img commit); the VM boots with
# its data afterwards.
. "${0%/*}/lib.sh"
requires_fuse
requires debugfs
use_guests

vm=${TEST_PREFIX}cyc
guest_make_disk "$GUEST_DIR/cyc.qcow2" 128M qcow2
guest_define "$vm" --disk "$GUEST_DIR/cyc.qcow2:qcow2"
guest_start "$vm"
guest_wait_agent "$vm"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
V=$mnt/$vm

depth() {   # layers in the chain of the VM's disk now
    local top
    top=$(guest_virsh domblklist "$vm" | awk '$1 == "vda" { print $2 }')
    qemu-img info -U --backing-chain "$top" | grep -c '^image:'
}

guest_exec "$vm" 'echo kept >/data/kept && sync' || fail "write"
mkdir "$V/snapshots/keep"
keep_sum=$(sha256sum <"$V/snapshots/keep/volumes/vda.img")

for i in 1 2 3 4 5 6 7 8 9 10; do
    guest_exec "$vm" "dd if=/dev/urandom of=/data/f$i bs=64k count=16 2>/dev/null && sync" ||
        fail "write $i"
    mkdir "$V/snapshots/c$i"
    [ "$(depth)" -le 3 ] || fail "running, cycle $i: chain depth $(depth)"
    rmdir "$V/snapshots/c$i"
    [ "$(depth)" -le 3 ] || fail "running, cycle $i after rmdir: depth $(depth)"
done
[ "$(sha256sum <"$V/snapshots/keep/volumes/vda.img")" = "$keep_sum" ] ||
    fail "the older snapshot changed over running cycles"

# a paused VM: no agent answers; a quick crash-consistent snapshot
guest_virsh suspend "$vm" >/dev/null
mkdir "$V/snapshots/paused"
[ "$(cat "$V/snapshots/paused/indications" | tr '\n' ' ')" = "Online Paused " ] ||
    fail "indications of a paused VM: $(cat "$V/snapshots/paused/indications")"
rmdir "$V/snapshots/paused"
guest_virsh resume "$vm" >/dev/null

# two snapshots while running, then stopped: rmdir of the older one merges
# a layer below the top (qemu-img commit + rebase) and the VM still boots
mkdir "$V/snapshots/mid-a"
guest_exec "$vm" 'echo between >/data/between && sync' || fail "write between"
mkdir "$V/snapshots/mid-b"
mid_b_sum=$(sha256sum <"$V/snapshots/mid-b/volumes/vda.img")
guest_shutdown "$vm"
wait_until 2 grep -qx "shut off" "$V/state" || fail "VM did not stop"
rmdir "$V/snapshots/mid-a"
[ "$(sha256sum <"$V/snapshots/mid-b/volumes/vda.img")" = "$mid_b_sum" ] ||
    fail "a later snapshot changed when an older one was deleted"
[ "$(sha256sum <"$V/snapshots/keep/volumes/vda.img")" = "$keep_sum" ] ||
    fail "the oldest snapshot changed"
guest_start "$vm"
guest_wait_agent "$vm"
guest_exec "$vm" 'cat /data/between' | grep -qx between || fail "data lost by the merge"
guest_shutdown "$vm"
wait_until 2 grep -qx "shut off" "$V/state" || fail "VM did not stop"
rmdir "$V/snapshots/mid-b"
for i in 11 12 13 14 15; do
    mkdir "$V/snapshots/c$i"
    [ "$(depth)" -le 3 ] || fail "stopped, cycle $i: chain depth $(depth)"
    rmdir "$V/snapshots/c$i"
done
[ "$(depth)" -le 2 ] || fail "stopped: depth $(depth) after the cycles"
[ "$(sha256sum <"$V/snapshots/keep/volumes/vda.img")" = "$keep_sum" ] ||
    fail "the older snapshot changed over stopped cycles"
[ "$(ls "$V/snapshots")" = keep ] || fail "snapshots left: $(ls "$V/snapshots")"
ls "$GUEST_DIR"/*.c[0-9]*.*.qcow2 2>/dev/null && fail "overlays of deleted snapshots left"

# the VM boots on the merged chain with all its data
guest_start "$vm"
guest_wait_agent "$vm"
guest_exec "$vm" 'ls /data/f10 /data/kept' >/dev/null || fail "data lost over the cycles"
# a block job vmsnapfs did not start (an active commit someone left ready,
# not pivoted): mkdir and rmdir answer EBUSY, not EIO, and touch nothing;
# once the job is gone they work (vmsnapfs's own interrupted merges are
# recorded and finished: merge-crash.sh)
mkdir "$V/snapshots/left"
guest_virsh blockcommit "$vm" vda --active >/dev/null
wait_until 30 sh -c "virsh -c qemu:///system blockjob '$vm' vda 2>&1 | grep -q '100 %'" ||
    fail "the active commit did not get ready"
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
start_vmsnapfs qemu:///system "$mnt"
expect_log "(snapshot|delete-snapshot) '(left|x)' failed: a block job runs on disk vda"
expect_errno EBUSY mkdir "$V/snapshots/x"
expect_errno EBUSY rmdir "$V/snapshots/left"
guest_virsh blockjob "$vm" vda --pivot >/dev/null
wait_until 10 sh -c "! virsh -c qemu:///system blockjob '$vm' vda 2>&1 | grep -q 'Commit'" ||
    fail "the commit job is still there"
# (pivoted by hand: left's layer is the VM's top now; its metadata goes)
rmdir "$V/snapshots/left"
ls "$GUEST_DIR"/*.left.*.qcow2 2>/dev/null && fail "the overlay of the finished merge is left"

rmdir "$V/snapshots/keep"
[ "$(depth)" = 1 ] || fail "depth $(depth) with no snapshot left"
guest_exec "$vm" 'cat /data/kept' | grep -qx kept || fail "data lost by the last merge"
echo "PASS: $testname"
