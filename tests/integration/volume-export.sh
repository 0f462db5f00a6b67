#!/usr/bin/env bash
# volume-export.sh: a stopped VM's disks exported with cp are what the
# guest wrote: exact (byte-identical to qemu-img convert of the chain),
# clean (e2fsck -fn), readable at odd offsets, sparse where the disk is;
# compressed clusters are read through qemu-nbd, which stops afterwards.
. "${0%/*}/lib.sh"
requires_fuse
requires debugfs
requires e2fsck
requires python3
use_guests

vm=${TEST_PREFIX}exp
d=$GUEST_DIR
# vda: a 3-layer chain (raw base, two qcow2 overlays); vdb: 4 GiB, sparse
guest_make_disk "$d/base.raw" 192M raw
qemu-img create -q -f qcow2 -b "$d/base.raw" -F raw "$d/mid.qcow2"
qemu-img create -q -f qcow2 -b "$d/mid.qcow2" -F qcow2 "$d/top.qcow2"
guest_make_disk "$d/sparse.qcow2" 4G qcow2
guest_define "$vm" --disk "$d/top.qcow2:qcow2:vda" --disk "$d/sparse.qcow2:qcow2:vdb"

guest_start "$vm"
guest_wait_agent "$vm"
# 50 MB of random data and a marker, written by the guest
want=$(guest_exec "$vm" 'dd if=/dev/urandom of=/data/big bs=1M count=50 2>/dev/null &&
    echo marker-one >/data/marker && sync && sha256sum /data/big | cut -d" " -f1') ||
    fail "writing in the guest"
guest_exec "$vm" 'echo little >/mnt/vdb/little && sync' || fail "writing vdb"
guest_shutdown "$vm"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
img=$mnt/$vm/volumes/vda.img
out=$(workdir)/out
mkdir -p "$out"

cp "$img" "$out/vda.raw"
# after the copy the daemon is idle: nothing it did for the reader goes on
ticks() { awk '{ print $14 + $15 }' "/proc/$VMSNAPFS_PID/stat"; }
idle_after() {
    local t0 t1
    t0=$(ticks)
    sleep 2
    t1=$(ticks)
    [ $((t1 - t0)) -lt 20 ] || fail "the daemon used $((t1 - t0)) ticks of CPU in the 2 s after $1"
}
idle_after "a copy"
# a reader that jumps far ahead while the cache is filled behind it
python3 - "$img" <<'PY' || fail "a reader that jumps"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
for i in range(4):
    os.pread(fd, 1 << 20, i << 20)
os.pread(fd, 1 << 20, 150 << 20)
os.pread(fd, 1 << 20, 100 << 20)
os.close(fd)
PY
idle_after "a reader that jumped"
qemu-img convert -O raw "$d/top.qcow2" "$out/ref.raw"
cmp "$out/vda.raw" "$out/ref.raw" || fail "export differs from qemu-img convert"
e2fsck -fn "$out/vda.raw" >"$out/fsck.log" 2>&1 || fail "e2fsck: $(cat "$out/fsck.log")"
got=$(debugfs -R 'cat /big' "$out/vda.raw" 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "/big in the export: $got, guest wrote $want"
[ "$(debugfs -R 'cat /marker' "$out/vda.raw" 2>/dev/null)" = marker-one ] ||
    fail "marker not in the export"

# reads at odd offsets and lengths match the reference
python3 - "$img" "$out/ref.raw" <<'PY' || fail "odd-offset reads differ"
import os, random, sys
img, ref = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
size = os.fstat(ref).st_size
assert os.fstat(img).st_size == size, "st_size"
rnd = random.Random(7)
cases = [(0, 1), (1, 4095), (511, 513), (size - 1, 1), (size - 3, 10), (size, 5)]
cases += [(rnd.randrange(size), rnd.randrange(1, 3 << 20)) for _ in range(200)]
for off, n in cases:
    a, b = os.pread(img, n, off), os.pread(ref, n, off)
    if a != b:
        sys.exit("mismatch at %d+%d" % (off, n))
PY

# two copies at once (each filling the kernel's cache ahead of itself)
cp "$img" "$out/a.raw" &
pa=$!
cp "$img" "$out/b.raw"
wait "$pa" || fail "the first of two copies at once failed"
cmp "$out/a.raw" "$out/ref.raw" || fail "the first of two copies at once differs"
cmp "$out/b.raw" "$out/ref.raw" || fail "the second of two copies at once differs"
rm -f "$out/a.raw" "$out/b.raw"

# a layer that changes under a sequential reader, after the daemon filled
# the kernel's cache ahead of it: what the reader gets is still the image
# as it was at open, and the reader is told (a read or close(2) fails with
# EIO), never a copy that looks complete
python3 - "$img" "$out/ref.raw" "$d/mid.qcow2" <<'PY' || fail "a layer changed under a reader"
import errno, os, sys
img, ref, layer = sys.argv[1:4]
fd, rf = os.open(img, os.O_RDONLY), os.open(ref, os.O_RDONLY)
off, failed = 0, None
for _ in range(4):
    buf = os.read(fd, 1 << 20)
    assert buf == os.pread(rf, len(buf), off), "mismatch before the change"
    off += len(buf)
os.utime(layer)                     # the layer changed (mtime): not ours
try:
    while True:
        buf = os.read(fd, 1 << 20)
        if not buf:
            break
        if buf != os.pread(rf, len(buf), off):
            sys.exit("data that is not the image at open, at %d" % off)
        off += len(buf)
except OSError as e:
    assert e.errno == errno.EIO, e
    failed = "read at %d" % off
try:
    os.close(fd)
except OSError as e:
    assert e.errno == errno.EIO, e
    failed = failed or "close"
if not failed:
    sys.exit("the copy ended without an error")
PY
grep -q "read-volume vda failed the disk changed while it was being read" "$mnt/$vm/events" ||
    fail "no reason in events for the changed layer"
expect_log "changed under an open view"
expect_log "'$vm': read-volume 'vda' failed"
cp "$img" "$out/again.raw"          # a new open sees the layer as it is now
cmp "$out/again.raw" "$out/ref.raw" || fail "a copy after the change differs"
rm -f "$out/again.raw"

# SEEK_DATA / SEEK_HOLE and st_blocks tell the sparse disk's holes
big=$mnt/$vm/volumes/vdb.img
[ "$(stat -c %s "$big")" = $((4 << 30)) ] || fail "vdb size"
blocks=$(stat -c %b "$big")
[ "$blocks" -lt $((512 << 11)) ] || fail "st_blocks of the sparse disk: $blocks"
python3 - "$big" <<'PY' || fail "SEEK_HOLE/SEEK_DATA"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
hole = os.lseek(fd, 0, os.SEEK_HOLE)
assert 0 < hole < size, "first hole at %d" % hole
data = os.lseek(fd, hole, os.SEEK_DATA)
assert hole < data < size, "data after the first hole at %d" % data
try:
    os.lseek(fd, size, os.SEEK_DATA)
    sys.exit("SEEK_DATA at the end did not fail")
except OSError as e:
    assert e.errno == 6, e      # ENXIO
PY
cp "$big" "$out/vdb.raw"
alloc=$(du -k "$out/vdb.raw" | cut -f1)
[ "$alloc" -lt 65536 ] || fail "the sparse export takes $alloc KiB"
qemu-img convert -O raw "$d/sparse.qcow2" "$out/vdb-ref.raw"
cmp "$out/vdb.raw" "$out/vdb-ref.raw" || fail "sparse export differs"
[ "$(debugfs -R 'cat /little' "$out/vdb.raw" 2>/dev/null)" = little ] ||
    fail "data of the sparse disk missing"
rm -f "$out"/vdb*.raw

# SIGTERM while a reader copies (the daemon fills the kernel's cache ahead
# of it): the daemon still stops, and the reader gets an error, not a hang
python3 - "$img" >"$out/reader.log" 2>&1 <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    while os.read(fd, 1 << 20):
        time.sleep(0.05)
    print("read to the end")
except OSError as e:
    print("error", e.errno)
PY
reader=$!
sleep 1
kill -TERM "$VMSNAPFS_PID"
for _ in $(seq 100); do kill -0 "$VMSNAPFS_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$VMSNAPFS_PID" 2>/dev/null && fail "vmsnapfs still runs 20 s after SIGTERM during a copy"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error after SIGTERM during a copy"
for _ in $(seq 100); do kill -0 "$reader" 2>/dev/null || break; sleep 0.2; done
kill -0 "$reader" 2>/dev/null && fail "the reader hangs after the daemon stopped"
wait "$reader" || true
grep -q "^error" "$out/reader.log" || fail "the reader of a stopped daemon: $(cat "$out/reader.log")"
grep -q " $mnt " /proc/mounts && fusermount3 -u "$mnt"

# compressed clusters: only QEMU can read them (qemu-nbd, then stopped)
qemu-img convert -q -c -O qcow2 "$d/top.qcow2" "$d/compressed.qcow2"
guest_virsh detach-disk "$vm" vdb --config >/dev/null
guest_virsh detach-disk "$vm" vda --config >/dev/null
guest_virsh attach-disk "$vm" "$d/compressed.qcow2" vda --subdriver qcow2 \
    --targetbus virtio --config >/dev/null
VMSNAPFS_DEBUG=qemu-nbd start_vmsnapfs qemu:///system "$mnt"
cp "$img" "$out/comp.raw"
cmp "$out/comp.raw" "$out/ref.raw" || fail "export of compressed clusters differs"
grep -Eq "qemu-nbd [0-9]+ serves '$d/compressed.qcow2'" "$VMSNAPFS_LOG" ||
    fail "compressed clusters were not read through qemu-nbd"
pgrep -f "qemu-nbd.*$d/compressed.qcow2" >/dev/null &&
    fail "qemu-nbd still runs after the last close"
echo "PASS: $testname"
