#!/usr/bin/env bash
# kube-restore.sh: restore, clone and cp -r backups on KubeVirt, through a
# real mount of the fake cluster (its restore and clone controllers):
# - restore of a stopped VM: the disk holds the snapshot's data again, the
#   safety snapshot holds what was there and undoes the restore, the VM
#   stays stopped; the VirtualMachineRestore goes once reported;
# - policies on a running VM: FailImmediate EBUSY at once (nothing made),
#   DryRun lists it, StopTarget stops it and starts it again,
#   WaitGracePeriod:DURATION times out (nothing made), WaitEventually
#   waits for someone to stop it;
# - conflicts: a MAC address another VM uses and a missing Secret: Strict
#   refuses (EBUSY), DryRun lists, BestEffort leaves them out;
# - EINVAL, ENOENT; a restore in progress blocks another (EBUSY);
# - SIGKILL mid-restore: the next daemon reports the outcome in `cat
#   restore` and starts the VM the policy stopped;
# - clone: NEW exists, stopped, with new MAC addresses and the snapshot's
#   data; EEXIST; a cluster without clone.kubevirt.io: EIO with the reason;
# - cp -r and tar of a snapshot directory: a complete backup.
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
# claim VM: the claim of VM's volume "root" now
claim() { k -n prod get vm "$1" -o jsonpath='{.spec.template.spec.volumes[0].persistentVolumeClaim.claimName}'; }
# at FILE OFFSET LEN: the bytes there
at() { dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null; }
guest_write() {  # guest_write VM OFFSET TEXT: into the VM's current claim
    kube_api POST /fake/disk "{\"namespace\":\"prod\",\"pvc\":\"$(claim "$1")\",\"offset\":$2,\"data\":\"$(printf %s "$3" | base64 -w0)\"}" >/dev/null
}
restores() { k -n prod get vmrestore -o name 2>/dev/null | wc -l; }
vm() {  # vm NAME RUNSTRATEGY MAC
    cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1-root, namespace: prod}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Secret
metadata: {name: $1-init, namespace: prod}
stringData: {userdata: "#cloud-config"}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $1, namespace: prod}
spec:
  runStrategy: $2
  template:
    spec:
      domain:
        firmware: {serial: serial-of-$1}
        devices:
          disks: [{name: root, disk: {bus: virtio}}, {name: init, disk: {bus: virtio}}]
          interfaces: [{name: default, masquerade: {}, macAddress: "$3"}]
      networks: [{name: default, pod: {}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: $1-root}}
      - {name: init, cloudInitNoCloud: {secretRef: {name: $1-init}}}
Y
}
k create ns prod >/dev/null
vm moe Halted 02:00:00:00:00:01
vm curly Always 02:00:00:00:00:02
wait_until 10 test -s "$data/pvc-moe-root.img" || fail "the fake made no disk for moe"
wait_until 10 test -s "$data/pvc-curly-root.img" || fail "the fake made no disk for curly"
start_vmsnapfs kubevirt:// "$mnt" -o failure_deadline=60s
M=$mnt/prod/moe
C=$mnt/prod/curly

# ---- a stopped VM -----------------------------------------------------------------
guest_write moe 4096 "state one"
mkdir "$M/snapshots/s1" || fail "mkdir s1: $(tail -n 2 "$M/events")"
guest_write moe 4096 "state two"
old=$(claim moe)
echo s1 >"$M/restore" || fail "restore s1: $(tail -n 3 "$M/events")"
grep -qx "phase: Succeeded" "$M/restore" || fail "cat restore: $(cat "$M/restore")"
grep -qx "snapshot: s1" "$M/restore" || fail "cat restore: $(cat "$M/restore")"
# progress: the bytes of the new claims that are bound, of all (one 16Mi claim)
grep -qx "progress: 16777216/16777216" "$M/restore" || fail "progress: $(cat "$M/restore")"
new=$(claim moe)
[ "$new" != "$old" ] || fail "the VM still uses its old claim"
[ "$(at "$data/pvc-$new.img" 4096 9)" = "state one" ] || fail "the restored disk lacks the snapshot's data"
[ "$(at "$data/pvc-$old.img" 4096 9)" = "state two" ] || fail "the old claim was changed"
cp "$M/volumes/root.img" "$wd/moe.img" || fail "cp after restore: $(tail -n 2 "$M/events")"
[ "$(at "$wd/moe.img" 4096 9)" = "state one" ] || fail "the mount shows the old disk"
grep -qx Stopped "$M/state" || fail "the restored VM runs: $(cat "$M/state")"
[ "$(restores)" = 0 ] || fail "the VirtualMachineRestore stays: $(k -n prod get vmrestore)"
safety=$(ls "$M/snapshots" | grep '^pre-restore-s1-[0-9]\{8\}-[0-9]\{6\}$') ||
    fail "no safety snapshot: $(ls "$M/snapshots")"
cp "$M/snapshots/$safety/volumes/root.img" "$wd/safety.img"
[ "$(at "$wd/safety.img" 4096 9)" = "state two" ] || fail "the safety snapshot lacks the state before"
grep -q "restore s1 succeeded restored (policy=FailImmediate mode=Strict)" "$M/events" ||
    fail "events: $(tail -n 2 "$M/events")"
# the safety snapshot undoes the restore
echo "$safety" >"$M/restore" || fail "restore $safety: $(tail -n 3 "$M/events")"
[ "$(at "$data/pvc-$(claim moe).img" 4096 9)" = "state two" ] || fail "undoing the restore"

# ---- bad input ------------------------------------------------------------------------
expect_errno ENOENT write "$M/restore" "nosuch"
expect_errno EINVAL write "$M/restore" "s1 policy=Sometimes"
expect_errno EINVAL write "$M/restore" "s1 mode=Strict extra"
expect_log "restore 'nosuch' failed"
expect_log "restore '-' failed: malformed line"

# ---- a running VM -----------------------------------------------------------------------
guest_write curly 4096 "curly one"
mkdir "$C/snapshots/c1" || fail "mkdir c1: $(tail -n 2 "$C/events")"
guest_write curly 4096 "curly two"
n_snaps=$(ls "$C/snapshots" | wc -l)
expect_errno EBUSY write "$C/restore" "c1"
expect_log "restore 'c1' failed: the VM is running and policy=FailImmediate"
[ "$(restores)" = 0 ] && [ "$(ls "$C/snapshots" | wc -l)" = "$n_snaps" ] ||
    fail "FailImmediate made something: $(ls "$C/snapshots"; k -n prod get vmrestore)"
echo "c1 mode=DryRun" >"$C/restore" || fail "a dry run on a running VM failed"
grep -qx "conflict: vm: it is running and policy=FailImmediate" "$C/restore" ||
    fail "the dry run does not list the running VM: $(cat "$C/restore")"
[ "$(restores)" = 0 ] && [ "$(ls "$C/snapshots" | wc -l)" = "$n_snaps" ] ||
    fail "DryRun made something"
start=$(date +%s)
expect_errno ETIMEDOUT write "$C/restore" "c1 policy=WaitGracePeriod:2s"
expect_log "restore 'c1' failed: the VM did not stop within the grace period"
[ $(($(date +%s) - start)) -lt 15 ] || fail "the grace period was not kept"
[ "$(restores)" = 0 ] && [ "$(ls "$C/snapshots" | wc -l)" = "$n_snaps" ] ||
    fail "a timed-out wait made something"
echo "c1 policy=StopTarget" >"$C/restore" || fail "StopTarget: $(tail -n 3 "$C/events")"
[ "$(at "$data/pvc-$(claim curly).img" 4096 9)" = "curly one" ] || fail "StopTarget did not restore"
wait_until 10 grep -qx Running "$C/state" || fail "StopTarget did not start the VM again"
# WaitEventually: until someone else stops it
(sleep 2; k -n prod patch vm curly --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null) &
stopper=$!
echo "c1 policy=WaitEventually" >"$C/restore" || fail "WaitEventually: $(tail -n 3 "$C/events")"
wait "$stopper"
grep -qx Stopped "$C/state" || fail "WaitEventually started the VM"

# ---- conflicts --------------------------------------------------------------------------
vm shemp Halted 02-00-00-00-00-01       # moe's MAC address, written otherwise
k -n prod delete secret moe-init >/dev/null
expect_errno EBUSY write "$M/restore" "s1"
grep -qx "conflict: interface default: the MAC address 02:00:00:00:00:01 is used by VM 'shemp'" "$M/restore" ||
    fail "no MAC conflict: $(cat "$M/restore")"
grep -qx "conflict: volume init: Secret 'moe-init' is missing" "$M/restore" ||
    fail "no missing Secret: $(cat "$M/restore")"
expect_log "restore 's1' failed: 2 conflict"
echo "s1 mode=DryRun" >"$M/restore" || fail "dry run with conflicts"
[ "$(grep -c '^conflict: ' "$M/restore")" = 2 ] || fail "dry run: $(cat "$M/restore")"
echo "s1 mode=BestEffort" >"$M/restore" || fail "BestEffort: $(tail -n 3 "$M/events")"
[ -z "$(k -n prod get vm moe -o jsonpath='{.spec.template.spec.domain.devices.interfaces[0].macAddress}')" ] ||
    fail "BestEffort kept the MAC address in use"
[ "$(k -n prod get vm moe -o jsonpath='{.spec.template.spec.volumes[*].name}')" = root ] ||
    fail "BestEffort kept the volume of the missing Secret"
[ "$(at "$data/pvc-$(claim moe).img" 4096 9)" = "state one" ] || fail "BestEffort did not restore"

# ---- a restore in progress blocks another; SIGKILL mid-restore -------------------------------
k -n prod annotate vm curly fake.vmsnapfs.io/restore-delay=8 >/dev/null
k -n prod patch vm curly --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
wait_until 10 grep -qx Running "$C/state" || fail "curly did not start"
guest_write curly 4096 "curly three"
"$ERRNO_PROBE" write "$C/restore" "c1 policy=StopTarget" >"$wd/killed" &
writer=$!
wait_until 30 eval '[ "$(restores)" = 1 ]' || fail "no VirtualMachineRestore appeared"
expect_errno EBUSY write "$mnt/prod/curly/restore" "c1 policy=StopTarget"
expect_log "restore '-' failed: another line written to this file runs now"
kill -KILL "$VMSNAPFS_PID"
wait "$VMSNAPFS_PID" 2>/dev/null || true
wait "$writer" || true
fusermount3 -uz "$mnt"
start_vmsnapfs kubevirt:// "$mnt" -o failure_deadline=60s
expect_log "of a vmsnapfs that was killed"
wait_until 40 grep -qx "phase: Succeeded" "$C/restore" ||
    fail "the next daemon does not report the restore: $(cat "$C/restore")"
grep -qx "snapshot: c1" "$C/restore" || fail "cat restore after the kill: $(cat "$C/restore")"
grep -q "VirtualMachineRestore 'vmsnapfs-restore-[a-z0-9]*' of a vmsnapfs that was killed: waiting" \
    "$VMSNAPFS_LOG" || fail "the restore was not taken up by the next daemon: $(cat "$VMSNAPFS_LOG")"
wait_until 10 grep -qx Running "$C/state" || fail "the VM the policy stopped was not started again"
[ "$(at "$data/pvc-$(claim curly).img" 4096 9)" = "curly one" ] || fail "the killed restore"
wait_until 10 eval '[ "$(restores)" = 0 ]' || fail "the VirtualMachineRestore stays"

# past the failure deadline KubeVirt is not interrupted half-way: the write
# fails (ETIMEDOUT), the restore goes on, its outcome shows in cat restore
# and the VM the policy stopped runs again
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
start_vmsnapfs kubevirt:// "$mnt" -o failure_deadline=4s
k -n prod annotate --overwrite vm curly fake.vmsnapfs.io/restore-delay=10 >/dev/null
expect_errno ETIMEDOUT write "$C/restore" "c1 policy=StopTarget"
expect_log "restore 'c1' failed: KubeVirt did not finish the restore within the failure deadline"
grep -q "^error: .*it goes on in KubeVirt" "$C/restore" || fail "cat restore: $(cat "$C/restore")"
wait_until 40 grep -qx "phase: Succeeded" "$C/restore" ||
    fail "the outcome of the restore past the deadline: $(cat "$C/restore")"
wait_until 10 grep -qx Running "$C/state" || fail "the VM was left stopped"
wait_until 10 eval '[ "$(restores)" = 0 ]' || fail "the VirtualMachineRestore stays"
# a restore another tool made, not yet started by KubeVirt, blocks ours
# before anything is made (no safety snapshot for nothing)
n_snaps=$(ls "$C/snapshots" | wc -l)
cat <<Y | k -n prod create -f - >/dev/null
apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineRestore
metadata: {name: other-tool}
spec:
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: curly}
  virtualMachineSnapshotName: c1
  targetReadinessPolicy: WaitEventually
Y
expect_errno EBUSY write "$C/restore" "c1 policy=StopTarget"
expect_log "restore 'c1' failed: 1 conflict"
grep -qx "conflict: vm: VirtualMachineRestore 'other-tool' is in progress on it" "$C/restore" ||
    fail "cat restore: $(cat "$C/restore")"
[ "$(ls "$C/snapshots" | wc -l)" = "$n_snaps" ] || fail "a refused restore left a safety snapshot"
k -n prod delete vmrestore other-tool >/dev/null
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
start_vmsnapfs kubevirt:// "$mnt" -o failure_deadline=60s

# ---- clone ------------------------------------------------------------------------------------
echo moe2 >"$M/snapshots/s1/clone" || fail "clone: $(tail -n 3 "$M/events")"
[ -d "$mnt/prod/moe2" ] || fail "no moe2 in the tree"
grep -qx Stopped "$mnt/prod/moe2/state" || fail "the clone runs"
mac=$(k -n prod get vm moe2 -o jsonpath='{.spec.template.spec.domain.devices.interfaces[0].macAddress}')
[ -n "$mac" ] && [ "$mac" != 02:00:00:00:00:01 ] || fail "the clone's MAC address: '$mac'"
serial=$(k -n prod get vm moe2 -o jsonpath='{.spec.template.spec.domain.firmware.serial}')
[ -n "$serial" ] && [ "$serial" != serial-of-moe ] || fail "the clone's serial: '$serial'"
[ "$(at "$data/pvc-$(claim moe2).img" 4096 9)" = "state one" ] || fail "the clone's disk"
grep -q "clone s1 succeeded VM 'moe2' made" "$M/events" || fail "events: $(tail -n 1 "$M/events")"
expect_errno EEXIST write "$M/snapshots/s1/clone" "moe2"
expect_errno EEXIST write "$M/snapshots/s1/clone" "curly"
expect_log "clone 's1' failed: a VM named '(moe2|curly)' exists"
expect_log "clone 's1' failed: malformed line"
expect_errno EINVAL write "$M/snapshots/s1/clone" "Bad_Name"

# ---- cp -r and tar of a snapshot directory: a complete offline backup ------------------------------
cp -r "$M/snapshots/s1" "$wd/backup" || fail "cp -r of a snapshot directory"
for f in vm.json resources status.json volumes/root.img; do
    [ -s "$wd/backup/$f" ] || fail "cp -r left out $f: $(ls -R "$wd/backup")"
done
vs=$(k -n prod get vmsnapshotcontent -o json | python3 -c '
import json, sys
for c in json.load(sys.stdin)["items"]:
    if c["spec"]["virtualMachineSnapshotName"] == "s1":
        print(c["spec"]["volumeBackups"][0]["volumeSnapshotName"])')
cmp "$wd/backup/volumes/root.img" "$data/vs-$vs.img" || fail "the backup's disk differs"
grep -q '"moe-root"' "$wd/backup/vm.json" || fail "the backup's vm.json"
tar -C "$M/snapshots" -cf "$wd/s1.tar" s1 || fail "tar of a snapshot directory"
[ "$(tar -tf "$wd/s1.tar" | grep -c '^s1/volumes/root.img$')" = 1 ] || fail "tar left out the disk"

# ---- a cluster without clone.kubevirt.io ------------------------------------------------------------
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
use_fake_cluster --no-clone
data=$KUBE_DIR/data/prod
k create ns prod >/dev/null
vm larry Halted 02:00:00:00:00:03
start_vmsnapfs kubevirt:// "$mnt"
mkdir "$mnt/prod/larry/snapshots/l1" || fail "mkdir l1"
expect_errno EIO write "$mnt/prod/larry/snapshots/l1/clone" "larry2"
grep -q "clone l1 failed.*no clone.kubevirt.io API" "$mnt/prod/larry/events" ||
    fail "no reason in events: $(tail -n 1 "$mnt/prod/larry/events")"
expect_log "clone 'l1' failed: the cluster serves no clone.kubevirt.io API"
echo "PASS: $testname"
