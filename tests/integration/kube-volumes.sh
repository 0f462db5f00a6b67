#!/usr/bin/env bash
# kube-volumes.sh: KubeVirt disks as raw files, read through
# VirtualMachineExports of the fake cluster (its export controller and
# export server: Range, the token header): a stopped VM's disk and a
# snapshot's are byte-exact copies of the fake's backing files; a marker
# written before a snapshot is in its image and one written after is not;
# the export goes after the last close; a VM started while its disk is
# read fails the reads (EIO), never serves torn data; rmdir of a snapshot
# being read is EBUSY; a killed daemon's export is deleted by the next one;
# no token in the log.
. "${0%/*}/lib.sh"
requires_root
requires_fuse
[ -x "${KUBE_PROBE:-}" ] || skip "no kube-probe (built without the KubeVirt backend)"
requires kubectl
requires curl
use_fake_cluster
wd=$(workdir)
mnt=$wd/mnt
mkdir -p "$mnt"
k() { kubectl --request-timeout=20s "$@"; }
data=$KUBE_DIR/data/prod
disk() { echo "$data/pvc-$1-root.img"; }
# guest_write VM OFFSET TEXT: the guest writes into its disk (the fake's /fake/disk)
guest_write() {
    kube_api POST /fake/disk "{\"namespace\":\"prod\",\"pvc\":\"$1-root\",\"offset\":$2,\"data\":\"$(printf %s "$3" | base64 -w0)\"}" >/dev/null
}
# exports VM: how many exports of VM's disks (its own, or its snapshots')
exports() { k -n prod get vmexport -o name 2>/dev/null | grep -c -- "-$1\$" || true; }
vm() {  # vm NAME RUNSTRATEGY
    cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1-root, namespace: prod}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $1, namespace: prod}
spec:
  runStrategy: $2
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: $1-root}}
Y
}
k create ns prod >/dev/null
vm moe Halted
vm larry Always
wait_until 10 test -s "$(disk moe)" || fail "the fake made no disk for moe"
wait_until 10 test -s "$(disk larry)" || fail "the fake made no disk for larry"
guest_write moe $((1 << 20)) "moe was here"
guest_write moe $((63 << 20)) "the last MiB"
start_vmsnapfs kubevirt:// "$mnt"
M=$mnt/prod/moe
L=$mnt/prod/larry

# a stopped VM's disk: its size, every byte of it
[ "$(stat -c %s "$M/volumes/root.img")" = $((64 << 20)) ] ||
    fail "size: $(stat -c %s "$M/volumes/root.img")"
# the export server knows no holes: st_blocks does not claim any
[ "$(( $(stat -c %b "$M/volumes/root.img") * 512 ))" -ge $((64 << 20)) ] ||
    fail "st_blocks claims holes: $(stat -c %b "$M/volumes/root.img")"
cp "$M/volumes/root.img" "$wd/moe.img" || fail "cp of a stopped VM's disk: $(tail -n 2 "$M/events")"
cmp "$wd/moe.img" "$(disk moe)" || fail "the copy differs from the disk"
[ "$(exports moe)" = 1 ] || fail "exports while copying: $(exports moe)"
# cp --sparse=always makes the copy sparse (the documented way)
cp --sparse=always "$M/volumes/root.img" "$wd/moe-sparse.img"
cmp "$wd/moe-sparse.img" "$(disk moe)" || fail "the sparse copy differs"
[ "$(du -k "$wd/moe-sparse.img" | cut -f1)" -lt 1024 ] ||
    fail "cp --sparse=always did not make holes: $(du -k "$wd/moe-sparse.img")"
# the export goes once no reader is left (10 s linger)
wait_until 20 eval '[ "$(exports moe)" = 0 ]' || fail "the export stays after the last close"

# a snapshot of the running VM: the marker written before is in its image,
# the one written after is not
guest_write larry $((2 << 20)) "before the snapshot"
mkdir "$L/snapshots/s1" || fail "mkdir s1: $(tail -n 2 "$L/events")"
guest_write larry $((2 << 20)) "after the snapshot!"
[ "$(stat -c %s "$L/snapshots/s1/volumes/root.img")" = $((64 << 20)) ] || fail "snapshot volume size"
cp "$L/snapshots/s1/volumes/root.img" "$wd/s1.img" ||
    fail "cp of a snapshot's disk: $(tail -n 2 "$L/events")"
[ "$(dd if="$wd/s1.img" bs=1 skip=$((2 << 20)) count=19 2>/dev/null)" = "before the snapshot" ] ||
    fail "the snapshot's image lacks what was written before it"
vs=$(ls "$data" | grep '^vs-.*-volume-root.img$')
cmp "$wd/s1.img" "$data/$vs" || fail "the snapshot's copy differs from its VolumeSnapshot"

# rmdir of a snapshot while its disk is read: EBUSY
exec 3<"$L/snapshots/s1/volumes/root.img"
expect_errno EBUSY rmdir "$L/snapshots/s1"
expect_log "delete-snapshot 's1' failed: a volume of the snapshot is open"
exec 3<&-
rmdir "$L/snapshots/s1" || fail "rmdir after the copy: $(tail -n 2 "$L/events")"

# a running VM's disk: not yet on KubeVirt (EBUSY, the reason in the log)
expect_errno EBUSY read "$L/volumes/root.img"
expect_log "reading the disk of a running VM needs a point-in-time snapshot"
expect_log "'prod/larry': open-volume 'root' failed"

# the VM starts while its disk is read: reads fail, never torn data
exec 3<"$M/volumes/root.img"
head -c 4096 <&3 >/dev/null
k -n prod patch vm moe --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
wait_until 5 grep -qx Running "$M/state" || fail "moe did not start"
python3 - <<'PY' || fail "a read after the VM started did not fail with EIO"
import errno, os, time
deadline = time.monotonic() + 5
while True:
    try:
        os.pread(3, 1 << 16, 40 << 20)
    except OSError as e:
        raise SystemExit(0 if e.errno == errno.EIO else "errno %d" % e.errno)
    if time.monotonic() > deadline:
        raise SystemExit("reads go on while the VM runs")
    time.sleep(0.2)
PY
{ exec 3<&-; } 2>/dev/null || true     # close(2) fails too: the disk changed
grep -q "read-volume root failed the VM was started" "$M/events" ||
    fail "no reason in events: $(tail -n 2 "$M/events")"
expect_log "reading"
expect_log "'prod/moe': read-volume 'root' failed"
k -n prod patch vm moe --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null
wait_until 5 grep -qx Stopped "$M/state" || fail "moe did not stop"

# SIGKILL with a disk open: the next daemon deletes the export it left
exec 3<"$M/volumes/root.img"
head -c 4096 <&3 >/dev/null
[ "$(exports moe)" = 1 ] || fail "no export behind the open disk: $(k get vmexport -A)"
kill -KILL "$VMSNAPFS_PID"
wait "$VMSNAPFS_PID" 2>/dev/null || true
exec 3<&-
fusermount3 -uz "$mnt"
start_vmsnapfs kubevirt:// "$mnt"
expect_log "of a vmsnapfs that was killed: deleted"
[ "$(exports moe)" = 0 ] || fail "the killed daemon's export stays: $(k get vmexport -A)"

# export_link=internal from outside the cluster: the export's Service
# name does not resolve here; the read fails with that reason (EIO)
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
start_vmsnapfs kubevirt:// "$mnt" -o export_link=internal
expect_errno EIO read "$M/volumes/root.img"
expect_log "Could not resolve host: virt-export-"
expect_log "'prod/moe': open-volume 'root' failed"
grep -q "Could not resolve host: virt-export-vmsnapfs-vm-[0-9a-f]*-moe.prod.svc" "$VMSNAPFS_LOG" ||
    fail "no reason for the internal link: $(tail -n 3 "$VMSNAPFS_LOG")"

# no token of any kind in the log
for t in "$(cat "$KUBE_DIR/token")"; do
    grep -rqs -- "$t" "${VMSNAPFS_LOG%-*}"-*.log && fail "the API token shows in the log"
done
if grep -qi "x-kubevirt-export-token: [A-Za-z0-9]" "${VMSNAPFS_LOG%-*}"-*.log; then
    fail "an export token shows in the log"
fi
echo "PASS: $testname"
