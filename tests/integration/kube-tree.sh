#!/usr/bin/env bash
# kube-tree.sh: a real FUSE mount of a (fake) KubeVirt cluster,
# `vmsnapfs kubevirt:// MNT` with a kubeconfig: one directory per namespace
# holding its VMs; state, agent and vm.json as the cluster says them; live
# changes made with kubectl within 2 s; snapshots made with kubectl listed;
# mkdir and rmdir make and delete VirtualMachineSnapshots (mkdir returns
# once it is usable: readyToUse), with the SPEC's errnos; a warm `ls -lR`
# makes no API request; consistency=required; a snapshot that fails at its
# deadline while the freeze lands late (upstream's race) ends thawed; no
# credential in the tree, events or the log.
. "${0%/*}/lib.sh"
requires_fuse
requires kubectl
requires curl
use_fake_cluster --team prod     # context "team": a token bound to namespace prod only
wd=$(workdir)
token=$(cat "$KUBE_DIR/token")
k() { timeout 60 kubectl --request-timeout=20s "$@"; }
requests() { kube_api GET /fake/requests | grep -o '"[A-Z]* /[^"]*"' | grep -v '?watch=' || true; }
frozen() { kube_api GET /fake/guests | grep -q "\"$1\": {\"frozen\": true"; }
guest() {   # guest NS/NAME FIELD: the fake guest's frozen, late, thawed_by
    kube_api GET /fake/guests | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]][sys.argv[2]])' "$1" "$2"
}
# wait_for SECONDS CMD...: until CMD succeeds
wait_for() {
    local n=$(( $1 * 20 ))
    shift
    for ((; n > 0; n--)); do "$@" && return 0; sleep 0.05; done
    return 1
}

vm() {  # vm NS NAME RUNSTRATEGY [ANNOTATIONS-JSON]
    cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $2-root, namespace: $1}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $2, namespace: $1, annotations: ${4:-{\}}}
spec:
  runStrategy: $3
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}, {name: cloudinit, disk: {bus: virtio}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: $2-root}}
      - {name: cloudinit, cloudInitNoCloud: {userData: "#cloud-config\n"}}
Y
}
k create ns prod >/dev/null
vm prod larry Always
vm default moe Halted
vm prod hung Always '{"fake.vmsnapfs.io/freeze": "hang:4"}'
vm prod mute Always '{"fake.vmsnapfs.io/agent": "absent"}'
vm prod stuck Always '{"fake.vmsnapfs.io/freeze": "hang:3"}'
wait_for 5 test "$(k -n prod get vm larry -o jsonpath='{.status.printableStatus}')" = Running ||
    fail "the fake's VM does not run"

mnt=$wd/mnt
start_vmsnapfs kubevirt:// "$mnt" -o failure_deadline=2s
expect_log "frozen after its snapshot failed: thawing"
expect_log "snapshot 'Bad_Name' failed: invalid snapshot name"
expect_log "'prod/larry': snapshot 'during' failed"
expect_log "the watch of .* failed|cannot list .*: .*trying again"
expect_log "'prod/mute': snapshot 'c1' failed: no guest agent connected"
expect_log "'prod/hung': snapshot 'late' failed"
[ "$(ls "$mnt" | tr '\n' ' ')" = "default prod " ] || fail "namespaces: $(ls "$mnt")"
[ "$(ls "$mnt/prod" | tr '\n' ' ')" = "hung larry mute stuck " ] || fail "VMs: $(ls "$mnt/prod")"
L=$mnt/prod/larry
[ "$(ls "$L" | tr '\n' ' ')" = "agent events restore snapshots state vm.json volumes " ] ||
    fail "a VM's tree: $(ls "$L")"
expect_content "$L/state" Running
expect_content "$L/agent" connected
expect_content "$mnt/default/moe/state" Stopped
expect_content "$mnt/default/moe/agent" disconnected
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["metadata"]["name"]=="larry"; assert "managedFields" not in o["metadata"]' "$L/vm.json" ||
    fail "vm.json"
[ "$(ls "$L/volumes")" = root.img ] || fail "volumes: $(ls "$L/volumes")"
[ "$(stat -c %s "$L/volumes/root.img")" = 1073741824 ] || fail "size of root.img"
expect_errno ENOENT stat "$mnt/prod/nope"
expect_errno ENOENT stat "$mnt/nope"

# a warm listing makes no API request
ls -lR "$mnt" >/dev/null
kube_api DELETE /fake/requests >/dev/null
ls -lR "$mnt" >/dev/null
cat "$L/state" "$L/agent" "$L/vm.json" >/dev/null
[ -z "$(requests)" ] || fail "a warm ls -lR made API requests: $(requests)"

# changes made with kubectl show within 2 s
k -n prod patch vm larry --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null
wait_for 2 grep -qx Stopped "$L/state" || fail "a stop made with kubectl: $(cat "$L/state")"
expect_content "$L/agent" disconnected
k -n prod patch vm larry --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
wait_for 2 grep -qx connected "$L/agent" || fail "a start made with kubectl"
vm prod curly Halted
# the kernel keeps listings (the ls -lR above read them): a watch event
# drops exactly the one that changed
listed() { ls "$1" | grep -qx "$2"; }
wait_for 2 listed "$mnt/prod" curly || fail "a VM made with kubectl is not listed: $(ls "$mnt/prod")"
wait_for 2 test -d "$mnt/prod/curly" || fail "a VM made with kubectl: $(ls "$mnt/prod")"
cat "$mnt/prod/curly/state" >/dev/null     # the kernel knows it now (its entry lasts 60 s)
k -n prod delete vm curly >/dev/null
gone() { [ "$("$ERRNO_PROBE" stat "$mnt/prod/curly")" = ENOENT ]; }
wait_for 2 gone || fail "a VM deleted with kubectl is still there: $("$ERRNO_PROBE" stat "$mnt/prod/curly")"
wait_for 2 eval '! listed "$mnt/prod" curly' || fail "a VM deleted with kubectl is still listed"
k create ns lonely >/dev/null
vm lonely curly Halted                   # a namespace shows while it holds VMs
wait_for 2 listed "$mnt" lonely || fail "a new namespace is not listed: $(ls "$mnt")"
k -n lonely delete vm curly >/dev/null
wait_for 2 eval '! listed "$mnt" lonely' || fail "an empty namespace is still listed"
cat <<Y | k -n prod create -f - >/dev/null
apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineSnapshot
metadata: {name: by-kubectl}
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: larry}
Y
wait_for 2 listed "$L/snapshots" by-kubectl || fail "a snapshot made with kubectl is not listed"
wait_for 2 test -d "$L/snapshots/by-kubectl" || fail "a snapshot made with kubectl is not shown"
wait_for 5 grep -qx Succeeded "$L/snapshots/by-kubectl/phase" || fail "its phase"

# the API server goes away for 3 s (a restart): the tree stays readable
# meanwhile, a mkdir fails with the reason, and once it is back changes
# show again and mkdir works
kube_api POST /fake/outage '{"seconds": 3}' >/dev/null
t0=$(date +%s%N)
expect_content "$L/state" Running
ls -l "$mnt/prod" >/dev/null || fail "the tree during the outage"
expect_errno EIO mkdir "$L/snapshots/during"
grep -q "snapshot during failed the cluster refused the snapshot: POST" "$L/events" ||
    fail "no reason in events: $(tail -n 1 "$L/events")"
left=$(( 4 - ($(date +%s%N) - t0) / 1000000000 ))
[ "$left" -le 0 ] || sleep "$left"
k -n prod get vmsnapshot during >/dev/null 2>&1 && fail "a snapshot was made during the outage"
vm prod after Halted
wait_for 10 test -d "$mnt/prod/after" || fail "a VM made after the outage does not show"

# mkdir: a VirtualMachineSnapshot, usable when mkdir returns
mkdir "$L/snapshots/s1" || fail "mkdir s1: $(tail -n 2 "$L/events")"
expect_content "$L/snapshots/s1/phase" Succeeded
[ "$(k -n prod get vmsnapshot s1 -o jsonpath='{.status.readyToUse}')" = true ] ||
    fail "mkdir returned before the snapshot was ready"
[ "$(k -n prod get vmsnapshot s1 -o jsonpath='{.metadata.labels.vmsnapfs\.io/made-by}')" = vmsnapfs ] ||
    fail "the snapshot does not say vmsnapfs made it"
[ "$(sort "$L/snapshots/s1/indications" | tr '\n' ' ')" = "GuestAgent Online " ] ||
    fail "indications: $(cat "$L/snapshots/s1/indications")"
grep -q '"larry-root"' "$L/snapshots/s1/vm.json" || fail "the snapshot's vm.json"
[ "$(tr '\n' ';' <"$L/snapshots/s1/resources")" = \
  "kubevirt.io VirtualMachine prod larry;core PersistentVolumeClaim prod larry-root;" ] ||
    fail "the snapshot's resources: $(cat "$L/snapshots/s1/resources")"
grep -q "snapshot s1 succeeded" "$L/events" || fail "events: $(cat "$L/events")"
expect_errno EEXIST mkdir "$L/snapshots/s1"
expect_errno EINVAL mkdir "$L/snapshots/Bad_Name"
mkdir "$mnt/default/moe/snapshots/offline" || fail "mkdir of a stopped VM's snapshot"
[ -z "$(cat "$mnt/default/moe/snapshots/offline/indications")" ] || fail "offline indications"

# rmdir while a restore that is not complete uses the snapshot: EBUSY
cat <<Y | k -n prod create -f - >/dev/null
apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineRestore
metadata: {name: r1}
spec:
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: larry}
  virtualMachineSnapshotName: s1
Y
expect_errno EBUSY rmdir "$L/snapshots/s1"
expect_log "delete-snapshot 's1' failed: VirtualMachineRestore r1 uses the snapshot"
grep -q "delete-snapshot s1 failed VirtualMachineRestore r1 uses the snapshot" "$L/events" ||
    fail "no reason in events: $(tail -n 1 "$L/events")"
k -n prod get vmsnapshot s1 >/dev/null || fail "the snapshot was deleted under a restore"
# a restore that failed is never tried again: it uses nothing
k -n prod patch vmrestore r1 --subresource=status --type merge -p \
    '{"status":{"complete":false,"conditions":[{"type":"Failure","status":"True","reason":"x"}]}}' >/dev/null

# rmdir: deleted, and gone when it returns
rmdir "$L/snapshots/s1" || fail "rmdir s1: $(tail -n 2 "$L/events")"
k -n prod get vmsnapshot s1 >/dev/null 2>&1 && fail "rmdir left the snapshot in the cluster"
expect_errno ENOENT stat "$L/snapshots/s1"
expect_errno ENOENT rmdir "$L/snapshots/s1"

# two shells at once on one VM (the kernel runs mkdirs in one directory one
# after the other): both snapshots are made, whole
"$ERRNO_PROBE" mkdir "$L/snapshots/p1" >"$wd/p1" &
one=$!
"$ERRNO_PROBE" mkdir "$L/snapshots/p2" >"$wd/p2" &
two=$!
wait "$one" "$two"
[ "$(cat "$wd/p1" "$wd/p2" | tr '\n' ' ')" = "OK OK " ] ||
    fail "two mkdirs at once: $(cat "$wd/p1" "$wd/p2" | tr '\n' ' ')"
for p in p1 p2; do
    [ "$(k -n prod get vmsnapshot "$p" -o jsonpath='{.status.readyToUse}')" = true ] ||
        fail "snapshot $p is not ready"
    rmdir "$L/snapshots/$p" || fail "rmdir $p"
done

# the freeze hangs, the snapshot fails at the deadline (ETIMEDOUT), the
# freeze lands later (upstream's race): vmsnapfs thaws it at once, not
# when the guest's own timer (unfreezeTimeout = the 2 s deadline) would
expect_errno ETIMEDOUT mkdir "$mnt/prod/hung/snapshots/late"
k -n prod get vmsnapshot late >/dev/null 2>&1 && fail "the failed snapshot was left"
landed() { [ "$(guest prod/hung late)" -ge 1 ]; }
wait_for 8 landed ||
    fail "the late freeze never landed: the race is not tested"
wait_for 2 eval '! frozen prod/hung' || fail "the guest stays frozen after a failed snapshot"
[ "$(guest prod/hung thawed_by)" = unfreeze ] ||
    fail "thawed by $(guest prod/hung thawed_by), not by vmsnapfs"
grep -q "'prod/hung': frozen after its snapshot failed: thawing" "$VMSNAPFS_LOG" ||
    fail "vmsnapfs did not thaw the late freeze"
grep -q "late failed the failure deadline passed" "$mnt/prod/hung/events" ||
    fail "no reason in events: $(cat "$mnt/prod/hung/events")"

# consistency=required: no agent, no snapshot (EAGAIN, nothing made)
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
start_vmsnapfs kubevirt:// "$mnt" -o consistency=required
expect_errno EAGAIN mkdir "$mnt/prod/mute/snapshots/c1"
k -n prod get vmsnapshot c1 >/dev/null 2>&1 && fail "a snapshot was made for consistency=required"
mkdir "$mnt/prod/larry/snapshots/c2" || fail "consistency=required with an agent"

# SIGKILL in the middle of a mkdir: the next daemon deletes the snapshot it
# left and thaws the guest (whose freeze lands late)
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
start_vmsnapfs kubevirt:// "$mnt" -o failure_deadline=60s
mkdir "$mnt/prod/stuck/snapshots/k1" 2>/dev/null &
mkdir_pid=$!
wait_for 5 k -n prod get vmsnapshot k1 -o name >/dev/null 2>&1 || fail "no snapshot k1 in the cluster"
kill -KILL "$VMSNAPFS_PID"
wait "$VMSNAPFS_PID" 2>/dev/null || true
fusermount3 -uz "$mnt"
wait "$mkdir_pid" 2>/dev/null || true
start_vmsnapfs kubevirt:// "$mnt"
expect_log "snapshot 'k1' of a vmsnapfs that was killed"
expect_log "'prod/stuck': frozen after its snapshot failed: thawing"
grep -q "'prod/stuck': snapshot 'k1' of a vmsnapfs that was killed: deleted" "$VMSNAPFS_LOG" ||
    fail "the restarted daemon did not see the killed one's snapshot: $(cat "$VMSNAPFS_LOG")"
wait_for 5 eval '! k -n prod get vmsnapshot k1 -o name >/dev/null 2>&1' ||
    fail "the killed mkdir's snapshot stays"
stuck_landed() { [ "$(guest prod/stuck late)" -ge 1 ]; }
wait_for 8 stuck_landed || fail "the late freeze never landed: the restart is not tested"
wait_for 2 eval '! frozen prod/stuck' || fail "the guest stays frozen after the restart"
[ "$(guest prod/stuck thawed_by)" = unfreeze ] ||
    fail "thawed by $(guest prod/stuck thawed_by), not by the restarted vmsnapfs"

# credentials that may not list at the cluster scope (a namespace's
# RoleBinding): the namespaces they may list are watched, the others do
# not show; everything works in those
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
start_vmsnapfs kubevirt://team "$mnt"
expect_log "watching the namespaces they may list"
grep -q "snapshot.kubevirt.io/v1beta1, namespace prod$" "$VMSNAPFS_LOG" ||
    fail "the namespaces watched are not logged: $(cat "$VMSNAPFS_LOG")"
[ "$(ls "$mnt" | tr '\n' ' ')" = "prod " ] || fail "namespaces with a namespaced token: $(ls "$mnt")"
expect_errno ENOENT stat "$mnt/default/moe"
expect_content "$L/state" Running
mkdir "$L/snapshots/t1" || fail "mkdir with a namespaced token: $(tail -n 2 "$L/events")"
expect_content "$L/snapshots/t1/phase" Succeeded
rmdir "$L/snapshots/t1" || fail "rmdir with a namespaced token: $(tail -n 2 "$L/events")"
listed "$mnt/prod" after || fail "VMs with a namespaced token: $(ls "$mnt/prod")"
k -n prod delete vm after >/dev/null
wait_for 2 eval '! listed "$mnt/prod" after' || fail "a change with a namespaced token"

# no credential anywhere
for t in "$token" "$(cat "$KUBE_DIR/team-token")"; do
    if grep -rqs -- "$t" "$mnt"/*/*/events "$mnt"/*/*/vm.json "$mnt"/*/*/state "${VMSNAPFS_LOG%-*}"-*.log; then
        fail "a token shows in the tree or the log"
    fi
done
echo "PASS: $testname"
