#!/usr/bin/env bash
# changes-guest.sh: incremental backups of a real guest. Three snapshots
# with writes, overwrites, zeros and a discard between them: the full
# export of the first plus vmsnap-apply of each snapshot's changes/ is
# byte-identical to that snapshot's export, and clean; the changes copy
# sparse into no more than the changed bytes (plus a cluster per extent);
# the discard shows as a zero extent; after rmdir of the middle snapshot
# the last one's changes/ names the first as its base and is still right.
. "${0%/*}/lib.sh"
requires_fuse
requires e2fsck
requires python3
use_guests
: "${VMSNAP_APPLY:=$srcdir/build/tools/vmsnap-apply}"
[ -x "$VMSNAP_APPLY" ] || skip "vmsnap-apply was not built (needs OpenSSL)"

vm=${TEST_PREFIX}inc
guest_make_disk "$GUEST_DIR/inc.qcow2" 128M qcow2
# discard='unmap', and /data mounted with -o discard: else libvirt drops
# the guest's discards and zero extents never happen
guest_define "$vm" --disk "$GUEST_DIR/inc.qcow2:qcow2" --discard
guest_start "$vm"
guest_wait_agent "$vm"
guest_exec "$vm" 'mount -o remount,discard /data' || fail "remount with discard"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
S=$mnt/$vm/snapshots
out=$(workdir)/out
mkdir -p "$out"

guest_exec "$vm" 'dd if=/dev/urandom of=/data/a bs=1M count=16 2>/dev/null && sync' ||
    fail "writing a"
mkdir "$S/n1"
[ ! -e "$S/n1/changes" ] || fail "the first snapshot has changes/"
# new data, an overwrite in the middle of a, zeros written as data
guest_exec "$vm" 'dd if=/dev/urandom of=/data/b bs=1M count=4 2>/dev/null &&
    dd if=/dev/urandom of=/data/a bs=64k count=4 seek=40 conv=notrunc 2>/dev/null &&
    dd if=/dev/zero of=/data/z bs=1M count=2 2>/dev/null && sync' || fail "writes before n2"
mkdir "$S/n2"
# a discard (a is deleted on a discard mount), and more data
guest_exec "$vm" 'rm /data/a && dd if=/dev/urandom of=/data/c bs=1M count=2 2>/dev/null &&
    sync && (fstrim /data 2>/dev/null || true)' || fail "writes before n3"
mkdir "$S/n3"

[ "$(cat "$S/n2/changes/base")" = n1 ] || fail "n2's base: $(cat "$S/n2/changes/base")"
[ "$(cat "$S/n3/changes/base")" = n2 ] || fail "n3's base: $(cat "$S/n3/changes/base")"
ls "$S/n3/changes" | sort | tr '\n' ' ' | grep -qx "base vda.img vda.map " ||
    fail "n3/changes holds: $(ls "$S/n3/changes" | tr '\n' ' ')"
grep -q '"zero":true' "$S/n3/changes/vda.map" || fail "the discard is no zero extent in n3's map"
# data, like volumes: for root and admin_group only (the kernel checks the
# modes under allow_other)
for f in vda.img vda.map; do
    [ "$(stat -c %a "$S/n3/changes/$f")" = 440 ] || fail "changes/$f mode $(stat -c %a "$S/n3/changes/$f")"
done

# a nightly backup: one full copy, then cp -r of each snapshot (changes/ too)
cp --sparse=always "$S/n1/volumes/vda.img" "$out/full.img"
for n in n2 n3; do
    cp -r "$S/$n" "$out/$n"
    [ -f "$out/$n/changes/vda.map" ] || fail "cp -r of $n has no changes/"
    cp --sparse=always "$S/$n/changes/vda.img" "$out/$n.changes.img"
    "$VMSNAP_APPLY" -q "$out/full.img" "$out/$n.changes.img" "$out/$n/changes/vda.map" ||
        fail "applying $n's changes"
    cmp "$out/full.img" "$S/$n/volumes/vda.img" || fail "n1 + changes up to $n differs from $n"
    e2fsck -fn "$out/full.img" >"$out/fsck.log" 2>&1 || fail "e2fsck after $n: $(cat "$out/fsck.log")"
    # the copy of the changes holds no more than the changed data, plus a
    # cluster per extent
    python3 - "$out/$n.changes.img" "$S/$n/changes/vda.map" <<'PY' || fail "$n's changes are not sparse"
import json, os, sys
st = os.stat(sys.argv[1])
m = json.load(open(sys.argv[2]))
data = sum(e["length"] for e in m["extents"] if not e["zero"])
bound = data + 65536 * len(m["extents"])
if st.st_blocks * 512 > bound:
    sys.exit("%d bytes allocated, %d changed" % (st.st_blocks * 512, data))
PY
done
rm -f "$out"/*.changes.img

# rmdir of the middle snapshot: n3's changes are since n1 now, and right
rmdir "$S/n2"
for _ in $(seq 30); do
    [ "$(cat "$S/n3/changes/base" 2>/dev/null)" = n1 ] && break
    sleep 0.5
done
[ "$(cat "$S/n3/changes/base")" = n1 ] || fail "after rmdir n2, n3's base: $(cat "$S/n3/changes/base")"
cp --sparse=always "$S/n1/volumes/vda.img" "$out/full2.img"
cp --sparse=always "$S/n3/changes/vda.img" "$out/n3b.img"
cp "$S/n3/changes/vda.map" "$out/n3b.map"
"$VMSNAP_APPLY" -q "$out/full2.img" "$out/n3b.img" "$out/n3b.map" || fail "applying n3 since n1"
cmp "$out/full2.img" "$S/n3/volumes/vda.img" || fail "n1 + n3's changes since n1 differs from n3"
echo "PASS: $testname"
