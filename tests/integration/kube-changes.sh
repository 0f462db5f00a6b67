#!/usr/bin/env bash
# kube-changes.sh: snapshots/S/changes/ on KubeVirt, from the fake
# cluster's changed block tracking (backup.kubevirt.io: a pull-mode
# VirtualMachineBackup per snapshot, its map endpoint):
# - with tracking on, for a chain of three snapshots with writes,
#   overwrites, zero writes and discards between them: the full export of
#   the first plus vmsnap-apply of the next one's changes is byte-identical
#   to the next one's full export, each time; base names the predecessor;
#   cp --sparse=always of changes/root.img allocates no more than the
#   changed bytes plus one cluster per extent; SEEK_DATA finds the changes;
# - after rmdir of the middle snapshot the last one's changes/ names the
#   first as its base and is still right;
# - a bad map is refused by vmsnap-apply with nothing changed;
# - without tracking (a VM not selected, a stopped VM, no scratch PVC):
#   no changes/, status.json says why; the snapshots themselves work;
# - nothing left behind: no backup, no token Secret, no frozen guest; no
#   token in the log.
. "${0%/*}/lib.sh"
requires_root
requires_fuse
[ -x "${KUBE_PROBE:-}" ] || skip "no kube-probe (built without the KubeVirt backend)"
: "${VMSNAP_APPLY:=$srcdir/build/tools/vmsnap-apply}"
[ -x "$VMSNAP_APPLY" ] || skip "vmsnap-apply was not built (needs OpenSSL)"
requires kubectl
requires curl
requires fallocate
use_fake_cluster
wd=$(workdir)
mnt=$wd/mnt
mkdir -p "$mnt"
k() { kubectl --request-timeout=20s "$@"; }
data=$KUBE_DIR/data/prod
disk() { echo "$data/pvc-$1-root.img"; }
# gw VM OFFSET FILE: the guest writes FILE's bytes at OFFSET
gw() {
    printf '{"namespace":"prod","pvc":"%s-root","offset":%d,"data":"%s"}' "$1" "$2" \
        "$(base64 -w0 "$3")" >"$wd/req.json"
    kube_api POST /fake/disk @"$wd/req.json" >/dev/null || fail "guest write"
}
# gd VM OFFSET LENGTH: the guest discards
gd() {
    kube_api POST /fake/disk "{\"namespace\":\"prod\",\"pvc\":\"$1-root\",\"offset\":$2,\"discard\":true,\"length\":$3}" >/dev/null
}
rnd() { head -c "$1" /dev/urandom >"$wd/r.bin"; echo "$wd/r.bin"; }
zeros() { head -c "$1" /dev/zero >"$wd/z.bin"; echo "$wd/z.bin"; }
frozen() { kube_api GET /fake/guests | python3 -c "import json,sys; print(json.load(sys.stdin).get('prod/$1', {}).get('frozen'))"; }
vm() {  # vm NAME RUNSTRATEGY LABELS ANNOTATIONS
    cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1-root, namespace: prod}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $1, namespace: prod, labels: {$3}, annotations: {$4}}
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
cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: scratch, namespace: prod}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
Y
SCRATCH='vmsnapfs.io/backup-scratch-pvc: scratch'
vm larry Always 'changedBlockTracking: "true"' "$SCRATCH"
vm moe Always '' "$SCRATCH"                       # not selected
vm curly Always 'changedBlockTracking: "true"' '' # no scratch PVC
wait_until 10 test -s "$(disk larry)" || fail "the fake made no disk"
wait_until 10 eval '[ "$(k -n prod get vm larry -o jsonpath={.status.changedBlockTracking.state})" = Enabled ]' ||
    fail "changed block tracking is not Enabled on larry"
MiB=$((1 << 20))
gw larry 0 "$(rnd $((3 * MiB)))"
gw larry $((20 * MiB)) "$(rnd $((2 * MiB)))"
# what a vmsnapfs killed between its freeze and the snapshot left: a
# backup, its token Secret, a frozen guest; the next one cleans up
dead="$(hostname)/999999999/1"
cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: Secret
metadata:
  name: vmsnapfs-backup-token-old
  namespace: prod
  labels: {vmsnapfs.io/made-by: vmsnapfs}
  annotations: {vmsnapfs.io/owner: "$dead"}
stringData: {token: "0123"}
---
apiVersion: backup.kubevirt.io/v1alpha1
kind: VirtualMachineBackup
metadata:
  name: vmsnapfs-moe-old
  namespace: prod
  labels: {vmsnapfs.io/made-by: vmsnapfs}
  annotations: {vmsnapfs.io/owner: "$dead"}
spec:
  source: {apiGroup: backup.kubevirt.io, kind: VirtualMachineBackupTracker, name: vmsnapfs-moe}
  mode: Pull
  pvcName: scratch
  skipQuiesce: true
  tokenSecretRef: vmsnapfs-backup-token-old
Y
wait_until 10 eval '[ "$(k -n prod get vmi moe -o jsonpath={.status.phase})" = Running ]' || fail "moe does not run"
kube_api PUT /apis/subresources.kubevirt.io/v1/namespaces/prod/virtualmachineinstances/moe/freeze '{"unfreezeTimeout":"10m"}' >/dev/null
[ "$(frozen moe)" = True ] || fail "the freeze of moe did not land"
expect_log "of a vmsnapfs that was killed: deleted"
start_vmsnapfs kubevirt:// "$mnt"
L=$mnt/prod/larry
wait_until 10 eval '[ "$(frozen moe)" = False ]' || fail "a killed vmsnapfs's frozen guest stays frozen"
wait_until 10 eval '[ -z "$(k -n prod get vmbackup -o name)" ]' || fail "the killed one's backup stays"
k -n prod get secret vmsnapfs-backup-token-old >/dev/null 2>&1 && fail "the killed one's Secret stays"

# the first snapshot: no base
mkdir "$L/snapshots/s1" || fail "mkdir s1: $(tail -n 3 "$L/events")"
[ ! -e "$L/snapshots/s1/changes" ] || fail "s1 has changes/ without a predecessor"
grep -q '"why": *"no older snapshot holds the checkpoint' "$L/snapshots/s1/status.json" ||
    fail "s1's status.json: $(cat "$L/snapshots/s1/status.json")"
[ "$(frozen larry)" = False ] || fail "the guest stays frozen after mkdir"

# writes, an overwrite, zeros written, a discard of data that was there
gw larry $((5 * MiB)) "$(rnd $((200 << 10)))"
gw larry 0 "$(rnd $((64 << 10)))"
gw larry $((10 * MiB)) "$(zeros $((128 << 10)))"
gd larry $((20 * MiB)) "$MiB"
mkdir "$L/snapshots/s2" || fail "mkdir s2: $(tail -n 3 "$L/events")"
gw larry $((5 * MiB + 4096)) "$(rnd 8192)"
gw larry $((30 * MiB)) "$(rnd $((300 << 10)))"
gd larry 0 $((64 << 10))
gw larry $((31 * MiB)) "$(zeros 4096)"
mkdir "$L/snapshots/s3" || fail "mkdir s3: $(tail -n 3 "$L/events")"
gw larry $((12 * MiB)) "$(rnd 4096)"             # after s3: in none of them
[ "$(frozen larry)" = False ] || fail "the guest stays frozen"

[ "$(cat "$L/snapshots/s2/changes/base")" = s1 ] || fail "s2's base: $(cat "$L/snapshots/s2/changes/base")"
[ "$(cat "$L/snapshots/s3/changes/base")" = s2 ] || fail "s3's base"
grep -q '"base": *"s2"' "$L/snapshots/s3/status.json" || fail "s3's status.json names no base"
ls "$L/snapshots/s3/changes" | sort | tr '\n' ' ' | grep -qx 'base root.img root.map ' ||
    fail "changes/ holds: $(ls "$L/snapshots/s3/changes")"

# full of the predecessor + the changes = full of the snapshot
for s in s1 s2 s3; do
    cp "$L/snapshots/$s/volumes/root.img" "$wd/$s.img" || fail "cp of $s"
done
cmp -s "$wd/s1.img" "$wd/s2.img" && fail "s1 and s2 are the same: the writes did not land"
check_chain() {  # check_chain BASE SNAP: apply SNAP's changes to BASE's full copy
    cp "$wd/$1.img" "$wd/work.img"
    cp --sparse=always "$L/snapshots/$2/changes/root.img" "$wd/$2.changes.img" ||
        fail "cp of $2's changes: $(tail -n 2 "$L/events")"
    cp "$L/snapshots/$2/changes/root.map" "$wd/$2.map"
    "$VMSNAP_APPLY" -q "$wd/work.img" "$wd/$2.changes.img" "$wd/$2.map" ||
        fail "vmsnap-apply of $2's changes"
    cmp "$wd/work.img" "$wd/$2.img" || fail "$1 + the changes of $2 is not $2"
}
check_chain s1 s2
check_chain s2 s3

# the changes are the writes: the discard and the zero write are zero
# extents; the sparse copy holds the changed data and little more
python3 - "$wd/s2.map" "$wd/s2.changes.img" <<'PY' || fail "s2's map or sparse copy"
import json, os, sys
m = json.load(open(sys.argv[1]))
MiB, KiB = 1 << 20, 1 << 10
ext = [(e["offset"], e["length"], e["zero"]) for e in m["extents"]]
assert m["base"] == "s2" or m["base"] == "s1", m["base"]
def covered(off, n, zero=None):
    return all(any(o <= x < o + l and (zero is None or z == zero) for o, l, z in ext)
               for x in range(off, off + n, 4096))
assert covered(5 * MiB, 200 * KiB, False), "the write at 5 MiB"
assert covered(0, 64 * KiB, False), "the overwrite at 0"
assert covered(10 * MiB, 128 * KiB), "the zero write"
assert covered(20 * MiB, MiB, True), "the discard is a zero extent"
assert not covered(25 * MiB, 4096), "unchanged ranges are out"
data = sum(l for _, l, z in ext if not z)
assert data <= 600 * KiB, "more changed data than written: %d" % data
alloc = os.stat(sys.argv[2]).st_blocks * 512
assert alloc <= data + 65536 * len(ext), "the sparse copy allocates %d for %d" % (alloc, data)
# SEEK_DATA finds the first changed data
fd = os.open(sys.argv[2], os.O_RDONLY)
assert os.lseek(fd, 0, os.SEEK_DATA) == min(o for o, _, z in ext if not z)
PY
[ "$(stat -c %s "$L/snapshots/s2/changes/root.img")" = $((32 * MiB)) ] || fail "changes/root.img size"

# a bad map is refused, nothing changed
cp "$wd/s1.img" "$wd/work.img"
sed 's/"size": *[0-9]*/"size": 12345/' "$wd/s2.map" >"$wd/bad.map"
st=0
"$VMSNAP_APPLY" -q "$wd/work.img" "$wd/s2.changes.img" "$wd/bad.map" 2>"$wd/apply.err" || st=$?
[ "$st" = 2 ] || fail "vmsnap-apply of a bad map: exit $st"
cmp -s "$wd/work.img" "$wd/s1.img" || fail "a refused map changed the image"

# rmdir of the middle one: s3 builds on s1, with both changes
rmdir "$L/snapshots/s2" || fail "rmdir s2: $(tail -n 3 "$L/events")"
wait_until 10 eval '[ "$(cat "$L/snapshots/s3/changes/base" 2>/dev/null)" = s1 ]' ||
    fail "s3's base after rmdir of s2: $(cat "$L/snapshots/s3/changes/base")"
check_chain s1 s3

# without tracking: why
M=$mnt/prod/moe
mkdir "$M/snapshots/m1" || fail "mkdir m1"
mkdir "$M/snapshots/m2" || fail "mkdir m2"
[ ! -e "$M/snapshots/m2/changes" ] || fail "changes/ without tracking"
grep -q 'no changed block tracking' "$M/snapshots/m2/status.json" || fail "m2: $(cat "$M/snapshots/m2/status.json")"
C=$mnt/prod/curly
mkdir "$C/snapshots/c1" || fail "mkdir c1"
grep -q 'no scratch PVC' "$C/snapshots/c1/status.json" || fail "c1: $(cat "$C/snapshots/c1/status.json")"
k -n prod patch vm larry --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null
wait_until 20 eval '! k -n prod get vmi larry >/dev/null 2>&1' || fail "larry did not stop"
wait_until 10 test -e "$L/snapshots" || true
sleep 1
mkdir "$L/snapshots/s4" || fail "mkdir s4 of the stopped VM: $(tail -n 3 "$L/events")"
grep -q 'the VM was stopped' "$L/snapshots/s4/status.json" || fail "s4: $(cat "$L/snapshots/s4/status.json")"
# what reaches the disk while the VM is stopped, no bitmap sees: after a
# restart a snapshot does not build on one from before it
gw larry $((15 * MiB)) "$(rnd 4096)"
k -n prod patch vm larry --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
wait_until 20 eval '[ "$(k -n prod get vm larry -o jsonpath={.status.changedBlockTracking.state})" = Enabled ]' ||
    fail "larry did not come back with tracking"
wait_until 10 eval 'grep -q "^running$" "$L/state"' || true
mkdir "$L/snapshots/s5" || fail "mkdir s5: $(tail -n 3 "$L/events")"
[ ! -e "$L/snapshots/s5/changes" ] || fail "s5 builds on a snapshot from before the restart"
grep -q 'restarted since' "$L/snapshots/s5/status.json" || fail "s5: $(cat "$L/snapshots/s5/status.json")"
# a base deleted behind vmsnapfs's back and made anew under its name is not
# taken for the old one
k -n prod delete vmsnapshot s1 >/dev/null
wait_until 20 eval '[ ! -e "$L/snapshots/s1" ]' || fail "s1 stays"
mkdir "$L/snapshots/s1" || fail "mkdir of a new s1"
[ ! -e "$L/snapshots/s3/changes" ] || fail "s3 builds on a new snapshot of its base's name"
grep -q 'deleted by another tool' "$L/snapshots/s3/status.json" || fail "s3: $(cat "$L/snapshots/s3/status.json")"

# the API server goes away for 2 s (a restart) as a mkdir begins: its
# requests are tried again, the chain goes on (from the new s1) and is
# right, no guest stays frozen (and below: no backup, no Secret is left)
gw larry $((7 * MiB)) "$(rnd 65536)"
expect_log "the watch of .* failed|cannot list .*: .*trying again"
kube_api POST /fake/outage '{"seconds": 2}' >/dev/null
mkdir "$L/snapshots/s6" || fail "mkdir across an outage: $(tail -n 3 "$L/events")"
[ "$(cat "$L/snapshots/s6/changes/base")" = s1 ] || fail "s6 after the outage: $(cat "$L/snapshots/s6/status.json")"
for s in s1 s6; do
    cp "$L/snapshots/$s/volumes/root.img" "$wd/$s.img" || fail "cp of $s"
done
check_chain s1 s6
wait_until 20 eval '[ "$(frozen larry)" = False ]' || fail "larry stays frozen after the outage"

# nothing left behind, no token in the log
[ -z "$(k -n prod get vmbackup -o name)" ] || fail "backups left: $(k -n prod get vmbackup -o name)"
[ -z "$(k -n prod get secret -o name | grep vmsnapfs-backup-token)" ] || fail "token Secrets left"
k -n prod get vmbackuptracker vmsnapfs-larry >/dev/null || fail "no tracker for larry"
for v in moe curly; do [ "$(frozen $v)" = False ] || fail "$v stays frozen"; done
! grep -Eq '[0-9a-f]{48}' "$VMSNAPFS_LOG" || fail "a token in the log"
echo "PASS: $testname"
