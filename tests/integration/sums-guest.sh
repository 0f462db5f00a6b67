#!/usr/bin/env bash
# sums-guest.sh: snapshots/S/SHA256SUMS of a real guest. After `cp -r S`,
# `sha256sum -c SHA256SUMS` passes in the copy (volumes/ and changes/),
# fails on a copy with one byte flipped, and the copy holds what the guest
# wrote before the snapshot, not after, and is a clean filesystem; the sums
# are kept in the libvirt snapshot's metadata, so a second mount reads them
# without hashing; a snapshot made without sums gets them while cp -r
# reads it, and the daemon reads its disk from storage once, not twice;
# hashing never makes rmdir EBUSY, and a snapshot's disk being copied does
# not keep a new snapshot (mkdir) out.
. "${0%/*}/lib.sh"
requires_fuse
requires e2fsck
requires jq
requires sha256sum
use_guests

vm=${TEST_PREFIX}sums
guest_make_disk "$GUEST_DIR/sums.qcow2" 128M qcow2
guest_define "$vm" --disk "$GUEST_DIR/sums.qcow2:qcow2"
guest_start "$vm"
guest_wait_agent "$vm"

mnt=$(workdir)/mnt
mnt2=$(workdir)/mnt2
out=$(workdir)/out
mkdir -p "$out"
S=$mnt/$vm/snapshots
sums_state() { jq -r '.checksums.state // "none"' "$S/$1/status.json" 2>/dev/null; }
sums_are() { [ "$(sums_state "$1")" = "$2" ]; }
stored() { jq -e '.checksums.stored == true' "$S/$1/status.json" >/dev/null 2>&1; }
in_metadata() { virsh -c qemu:///system snapshot-dumpxml "$vm" "$1" | grep -q 'sha256'; }
read_bytes() { awk '$1 == "read_bytes:" { print $2 }' "/proc/$1/io"; }

# -- a snapshot made without sums (no file), then one with ----------------
start_vmsnapfs qemu:///system "$mnt" -o no_checksums
pid1=$VMSNAPFS_PID
guest_exec "$vm" 'dd if=/dev/urandom of=/data/a bs=1M count=24 2>/dev/null &&
    echo "before s0" >/data/marker && sync' || fail "writes before s0"
mkdir "$S/s0" || fail "mkdir s0: $(tail -n 2 "$mnt/$vm/events")"
[ -e "$S/s0/SHA256SUMS" ] && fail "SHA256SUMS with no_checksums"
fusermount3 -u "$mnt"
wait "$pid1" || fail "the first daemon failed"
in_metadata s0 && fail "no_checksums kept sums in s0's metadata"

start_vmsnapfs qemu:///system "$mnt"
pid=$VMSNAPFS_PID
guest_exec "$vm" 'dd if=/dev/urandom of=/data/b bs=1M count=8 2>/dev/null &&
    echo "before s1" >/data/marker && sync' || fail "writes before s1"
mkdir "$S/s1" || fail "mkdir s1: $(tail -n 2 "$mnt/$vm/events")"
guest_exec "$vm" 'echo "after s1" >/data/marker && sync' || fail "write after s1"
wait_until 120 sums_are s1 done || fail "s1's sums: $(cat "$S/s1/status.json")"
wait_until 30 stored s1 || fail "s1's sums not kept: $(cat "$S/s1/status.json")"
in_metadata s1 || fail "s1's sums are not in its libvirt metadata"
# s1 builds on s0: its changes/ has a line too
grep -qx '[0-9a-f]\{64\}  volumes/vda.img' "$S/s1/SHA256SUMS" || fail "SHA256SUMS: $(cat "$S/s1/SHA256SUMS")"
grep -qx '[0-9a-f]\{64\}  changes/vda.img' "$S/s1/SHA256SUMS" || fail "no changes/ line: $(cat "$S/s1/SHA256SUMS")"

# cp -r and sha256sum -c; the copy is the guest at s1, and clean
cp -r "$S/s1" "$out/s1" || fail "cp -r s1"
(cd "$out/s1" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c of the copy of s1"
e2fsck -fn "$out/s1/volumes/vda.img" >/dev/null 2>&1 || fail "e2fsck of the copy of s1"
debugfs -R 'cat /marker' "$out/s1/volumes/vda.img" 2>/dev/null | grep -qx "before s1" ||
    fail "the copy is not the guest at s1: $(debugfs -R 'cat /marker' "$out/s1/volumes/vda.img" 2>&1)"
cp "$out/s1/volumes/vda.img" "$out/flipped.img"
printf '\xff' | dd of="$out/s1/volumes/vda.img" bs=1 seek=$((20 << 20)) conv=notrunc status=none
cmp -s "$out/s1/volumes/vda.img" "$out/flipped.img" && fail "the byte did not flip"
(cd "$out/s1" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1) &&
    fail "sha256sum -c passed on a copy with a flipped byte"

# -- s0 has no sums yet: cp -r computes them; its disk is read once ------
[ "$(sums_state s0)" = queued ] || fail "s0: $(sums_state s0)"
alloc=$(($(stat -c %b "$S/s0/volumes/vda.img") * 512))
sync
echo 3 >/proc/sys/vm/drop_caches
before=$(read_bytes "$pid")
cp -r "$S/s0" "$out/s0" || fail "cp -r s0"
after=$(read_bytes "$pid")
echo "the daemon read $((after - before)) bytes from storage for cp -r of s0 ($alloc allocated)"
[ $((after - before)) -lt $((alloc + alloc / 2)) ] ||
    fail "the disk was read twice: $((after - before)) bytes for $alloc allocated"
(cd "$out/s0" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c of the copy of s0"
debugfs -R 'cat /marker' "$out/s0/volumes/vda.img" 2>/dev/null | grep -qx "before s0" ||
    fail "the copy is not the guest at s0"
wait_until 30 in_metadata s0 || fail "s0's sums were not kept"

# -- a second mount: the sums as kept, nothing hashed --------------------
start_vmsnapfs qemu:///system "$mnt2"
[ "$(cat "$mnt2/$vm/snapshots/s1/SHA256SUMS")" = "$(cat "$S/s1/SHA256SUMS")" ] ||
    fail "the second mount's SHA256SUMS of s1"
[ "$(cat "$mnt2/$vm/snapshots/s0/SHA256SUMS")" = "$(cat "$S/s0/SHA256SUMS")" ] ||
    fail "the second mount's SHA256SUMS of s0"
grep -q "SHA256SUMS ready" "$VMSNAPFS_LOG" && fail "the second mount hashed"
fusermount3 -u "$mnt2"

# -- hashing is no open volume; a copy of a snapshot is no obstacle to mkdir
mkdir "$S/s2" || fail "mkdir s2: $(tail -n 2 "$mnt/$vm/events")"
rmdir "$S/s2" || fail "rmdir of a snapshot being hashed: $(tail -n 2 "$mnt/$vm/events")"
exec 3<"$S/s1/volumes/vda.img"
mkdir "$S/s3" || fail "mkdir while a snapshot's disk is open: $(tail -n 2 "$mnt/$vm/events")"
expect_log "delete-snapshot 's3' failed"
expect_errno EBUSY rmdir "$S/s3"
exec 3<&-
wait_until 10 rmdir "$S/s3" || fail "rmdir s3 after the copy: $(tail -n 2 "$mnt/$vm/events")"
guest_exec "$vm" 'cat /data/marker' | grep -qx "after s1" || fail "the guest lost its data"
echo "PASS: $testname"
