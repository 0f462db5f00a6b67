#!/usr/bin/env bash
# kube-fake.sh: the fake Kubernetes API server (tests/kube/fake-apiserver.py)
# is checked with the real kubectl, so that the KubeVirt backend is tested
# against Kubernetes' behaviour and not against our reading of it:
# discovery, token and client-certificate auth, create/get/list/delete,
# `kubectl wait --for condition=Ready` and `kubectl get -w` (list + watch),
# 410 for an expired resourceVersion, and KubeVirt's snapshot controller:
# phase Succeeded before readyToUse, indications, the deadline, and the
# upstream race that leaves a guest frozen after a failed snapshot;
# VirtualMachineRestore (the CRD default and enum, the webhooks, the
# restore of a stopped VM onto new claims holding the snapshot's bytes,
# FailImmediate) and VirtualMachineClone (Succeeded, the MAC address trap
# of the restore webhook, printer columns, a cluster without the API).
. "${0%/*}/lib.sh"
requires kubectl
requires curl
use_fake_cluster --history 50 --bookmark-interval 1
wd=$(workdir)
k() { timeout 60 kubectl --request-timeout=20s "$@"; }
jp() { k get "$1" -o "jsonpath={$2}"; }

# discovery, versions, auth
k version 2>&1 | grep -q 'Server Version: v1.30' || fail "kubectl version: $(k version 2>&1)"
# (outputs captured first: a grep -q that ends early fails the writer)
out=$(k api-resources)
grep -q '^virtualmachinesnapshots .*snapshot.kubevirt.io/v1beta1 .*true .*VirtualMachineSnapshot' <<<"$out" ||
    fail "api-resources: $out"
out=$(k get --raw /apis/snapshot.kubevirt.io/v1alpha1)
grep -q '"virtualmachinesnapshots"' <<<"$out" || fail "v1alpha1 is not served"
k --context fake-cert get ns default >/dev/null || fail "client certificate refused"
out=$(kubectl --token not-the-token get vm 2>&1) && fail "a wrong token was accepted"
grep -q Unauthorized <<<"$out" || fail "a wrong token: $out"

# objects
cat >"$wd/vm.yaml" <<'Y'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: larry-root}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: larry}
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}, {name: cloudinit, disk: {bus: virtio}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: larry-root}}
      - {name: cloudinit, cloudInitNoCloud: {userData: "#cloud-config\n"}}
Y
k create -f "$wd/vm.yaml" >/dev/null || fail "create the VM"
out=$(k create -f "$wd/vm.yaml" 2>&1) && fail "created twice"
grep -q 'AlreadyExists\|already exists' <<<"$out" || fail "a second create: $out"
for ((i = 0; i < 100; i++)); do
    [ "$(jp vm/larry .status.printableStatus)" = Running ] && break
    sleep 0.1
done
[ "$(jp vm/larry .status.printableStatus)" = Running ] || fail "the VM does not run"
jp vmi/larry '.status.conditions[*].type' | grep -q AgentConnected || fail "no agent on the VMI"
out=$(k get vm nope 2>&1) && fail "a VM that is not there"
grep -q 'virtualmachines.kubevirt.io "nope" not found' <<<"$out" || fail "404: $out"

# a watch (kubectl get -w: list, then watch from its resourceVersion)
k get vm -w -o name >"$wd/watch" 2>&1 &
watcher=$!
sleep 1
k label vm larry tier=gold >/dev/null || fail "label"
for ((i = 0; i < 50; i++)); do
    [ "$(grep -c 'virtualmachine.kubevirt.io/larry' "$wd/watch")" -ge 2 ] && break
    sleep 0.1
done
kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null || true
[ "$(grep -c 'virtualmachine.kubevirt.io/larry' "$wd/watch")" -ge 2 ] ||
    fail "the watch did not see the change: $(cat "$wd/watch")"
[ "$(k get vm -l tier=gold -o name)" = virtualmachine.kubevirt.io/larry ] || fail "label selector"

# a snapshot as the controller makes it: Succeeded, then readyToUse
cat >"$wd/snap.yaml" <<'Y'
apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineSnapshot
metadata: {name: snap-larry}
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: larry}
Y
k annotate vm larry fake.vmsnapfs.io/ready-delay=2 >/dev/null
k create -f "$wd/snap.yaml" >/dev/null || fail "create the snapshot"
for ((i = 0; i < 100; i++)); do
    [ "$(jp vmsnapshot/snap-larry .status.phase)" = Succeeded ] && break
    sleep 0.05
done
[ "$(jp vmsnapshot/snap-larry .status.phase)" = Succeeded ] || fail "no Succeeded phase"
[ "$(jp vmsnapshot/snap-larry .status.readyToUse)" = false ] ||
    fail "readyToUse together with Succeeded: the fake hides upstream's order"
k wait vmsnapshot snap-larry --for condition=Ready --timeout=20s >/dev/null || fail "kubectl wait"
[ "$(jp vmsnapshot/snap-larry '.status.indications[*]')" = "GuestAgent Online" ] ||
    fail "indications: $(jp vmsnapshot/snap-larry '.status.indications[*]')"
[ "$(jp vmsnapshot/snap-larry '.status.snapshotVolumes.excludedVolumes[*]')" = cloudinit ] ||
    fail "excludedVolumes"
content=$(jp vmsnapshot/snap-larry .status.virtualMachineSnapshotContentName)
[ "$(jp "vmsnapshotcontent/$content" '.spec.volumeBackups[*].volumeName')" = root ] ||
    fail "the content's volumes"
out=$(sed 's/kind: VirtualMachine,/kind: VirtualMachineInstance,/; s/snap-larry/bad/' "$wd/snap.yaml" |
      k create -f - 2>&1) && fail "a snapshot of a VMI was admitted"
grep -q 'spec.source.kind: invalid kind' <<<"$out" || fail "the webhook: $out"

# delete waits for the finalizers (the content goes with the snapshot)
k delete vmsnapshot snap-larry --timeout=20s >/dev/null || fail "kubectl delete"
k get "vmsnapshotcontent/$content" >/dev/null 2>&1 && fail "the content was left"
[ -z "$(jp vm/larry .status.snapshotInProgress)" ] || fail "the VM stays locked"

# a resourceVersion older than the history: 410 in the watch
for ((i = 0; i < 60; i++)); do
    curl -sS --cacert "$KUBE_DIR/ca.crt" -H "Authorization: Bearer $(cat "$KUBE_DIR/token")" \
        -H 'Content-Type: application/merge-patch+json' -X PATCH \
        --data "{\"metadata\":{\"labels\":{\"n\":\"$i\"}}}" \
        "$KUBE_URL/apis/kubevirt.io/v1/namespaces/default/virtualmachines/larry" >/dev/null
done
body=$(kube_api GET "/apis/kubevirt.io/v1/namespaces/default/virtualmachines?watch=true&resourceVersion=1001&timeoutSeconds=2")
grep -q '"type": "ERROR".*"code": 410' <<<"$body" || fail "no 410: $body"
# bookmarks carry the current resourceVersion
rv=$(k get vm -o jsonpath='{.metadata.resourceVersion}')
body=$(kube_api GET "/apis/kubevirt.io/v1/namespaces/default/virtualmachines?watch=true&resourceVersion=$rv&allowWatchBookmarks=true&timeoutSeconds=2")
grep -q '"type": "BOOKMARK"' <<<"$body" || fail "no bookmark: $body"

# upstream's race: the agent hangs, the snapshot fails at its deadline, and
# the freeze lands afterwards: the guest stays frozen (until its auto-thaw)
k annotate vm larry fake.vmsnapfs.io/freeze=hang:4 >/dev/null
sed 's/snap-larry/hung/; $a\  failureDeadline: 2s' "$wd/snap.yaml" | k create -f - >/dev/null ||
    fail "create the hung snapshot"
for ((i = 0; i < 100; i++)); do
    [ "$(jp vmsnapshot/hung .status.phase)" = Failed ] && break
    sleep 0.1
done
[ "$(jp vmsnapshot/hung .status.phase)" = Failed ] || fail "no Failed phase at the deadline"
jp vmsnapshot/hung '.status.conditions[?(@.type=="Failure")].reason' | grep -q 'snapshot deadline exceeded' ||
    fail "no Failure condition"
for ((i = 0; i < 60; i++)); do
    kube_api GET /fake/guests | grep -q '"default/larry": {"frozen": true' && break
    sleep 0.1
done
kube_api GET /fake/guests | grep -q '"default/larry": {"frozen": true' ||
    fail "the late freeze did not land: $(kube_api GET /fake/guests)"
[ "$(jp vmi/larry .status.fsFreezeStatus)" = frozen ] || fail "fsFreezeStatus"
k delete vmsnapshot hung >/dev/null
kube_api PUT /apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/larry/unfreeze >/dev/null
kube_api GET /fake/guests | grep -q '"default/larry": {"frozen": false' || fail "unfreeze"
# VirtualMachineExport of a snapshot (kubevirt-api.md 5): Skipped while the
# snapshot does not exist, then Ready with a token Secret and links; the
# export server answers as Go's ServeContent does
cat <<'Y' | k create -f - >/dev/null || fail "create an export"
apiVersion: export.kubevirt.io/v1beta1
kind: VirtualMachineExport
metadata: {name: x-snap}
spec:
  source: {apiGroup: snapshot.kubevirt.io, kind: VirtualMachineSnapshot, name: snap-x}
Y
k wait vmexport x-snap --for=jsonpath='{.status.phase}'=Skipped --timeout=20s >/dev/null ||
    fail "an export of no snapshot: $(jp vmexport/x-snap .status.phase)"
[ "$(jp vmexport/x-snap '.status.conditions[?(@.type=="Ready")].reason')" = VMSnapshotNotFound ] ||
    fail "Skipped reason"
sed 's/snap-larry/snap-x/' "$wd/snap.yaml" | k create -f - >/dev/null || fail "create snap-x"
k wait vmsnapshot snap-x --for condition=Ready --timeout=20s >/dev/null || fail "snap-x not ready"
k wait vmexport x-snap --for=jsonpath='{.status.phase}'=Ready --timeout=20s >/dev/null ||
    fail "the export is not Ready: $(k get vmexport x-snap -o yaml)"
[ "$(jp vmexport/x-snap '.status.links.external.volumes[0].name')" = larry-root ] ||
    fail "the link names the claim: $(jp vmexport/x-snap '.status.links.external.volumes[0].name')"
url=$(jp vmexport/x-snap '.status.links.external.volumes[0].formats[?(@.format=="raw")].url')
[[ $url == */volumes/x-snap-larry-root/disk.img ]] || fail "raw URL: $url"
xtok=$(k get secret "$(jp vmexport/x-snap .status.tokenSecretRef)" -o jsonpath='{.data.token}' | base64 -d)
jp vmexport/x-snap '.status.links.external.cert' >"$wd/export-ca.crt"
xcurl() { curl -s --cacert "$wd/export-ca.crt" -o "$wd/x.out" -D "$wd/x.hdr" -w '%{http_code}' "$@"; }
[ "$(xcurl "$url")" = 401 ] && [ ! -s "$wd/x.out" ] || fail "no token: not a bare 401"
[ "$(xcurl -H "x-kubevirt-export-token: $xtok" -r 4096-8191 "$url")" = 206 ] || fail "a range"
grep -qi '^Content-Range: bytes 4096-8191/1073741824' "$wd/x.hdr" || fail "Content-Range: $(cat "$wd/x.hdr")"
[ "$(stat -c %s "$wd/x.out")" = 4096 ] || fail "the range's length"
[ "$(xcurl "$url?x-kubevirt-export-token=$xtok" -r 0-0,8-9)" = 206 ] || fail "token as a parameter"
grep -qi '^Content-Type: multipart/byteranges' "$wd/x.hdr" || fail "two ranges: not multipart"
[ "$(xcurl -H "x-kubevirt-export-token: $xtok" -r 1073741824- "$url")" = 416 ] || fail "past the end"
grep -qi '^Content-Range: bytes \*/1073741824' "$wd/x.hdr" || fail "416 without the size"
[ "$(xcurl -I -H "x-kubevirt-export-token: $xtok" "$url")" = 200 ] || fail "HEAD"
grep -qi '^Content-Length: 1073741824' "$wd/x.hdr" || fail "HEAD: $(cat "$wd/x.hdr")"
[ "$(xcurl -H "x-kubevirt-export-token: $xtok" "${url%/*}/nope.img")" = 404 ] || fail "no such file"
k delete vmexport x-snap >/dev/null
for ((i = 0; i < 100; i++)); do
    k get pvc x-snap-larry-root >/dev/null 2>&1 || break
    sleep 0.1
done
k get pvc x-snap-larry-root >/dev/null 2>&1 && fail "the export's PVC outlives it"
# a running VM cannot be exported: Pending, InUse
cat <<'Y' | k create -f - >/dev/null || fail "create a VM export"
apiVersion: export.kubevirt.io/v1beta1
kind: VirtualMachineExport
metadata: {name: x-vm}
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: larry}
Y
for ((i = 0; i < 100; i++)); do
    [ "$(jp vmexport/x-vm '.status.conditions[?(@.type=="Ready")].reason')" = InUse ] && break
    sleep 0.05
done
[ "$(jp vmexport/x-vm .status.phase)" = Pending ] || fail "a running VM's export: $(jp vmexport/x-vm .status.phase)"
[ "$(jp vmexport/x-vm '.status.conditions[?(@.type=="Ready")].message')" = "Virtual Machine default/larry is running" ] ||
    fail "InUse message: $(jp vmexport/x-vm '.status.conditions[?(@.type=="Ready")].message')"

# ---- VirtualMachineRestore (kubevirt-api.md 1.4, 1.5, 3) ----------------------------
data=$KUBE_DIR/data/default
# at FILE OFFSET LEN: the bytes there
at() { dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null; }
disk_write() {  # disk_write PVC OFFSET TEXT: as the guest writes
    kube_api POST /fake/disk "{\"namespace\":\"default\",\"pvc\":\"$1\",\"offset\":$2,\"data\":\"$(printf %s "$3" | base64 -w0)\"}" >/dev/null
}
cat <<'Y' | k create -f - >/dev/null || fail "create moe"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: moe-root}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: moe, labels: {app: moe, tier: gold}}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}]
          interfaces: [{name: default, masquerade: {}, macAddress: "02-00-00-00-00-01"}]
      networks: [{name: default, pod: {}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: moe-root}}
Y
wait_until 10 test -s "$data/pvc-moe-root.img" || fail "no disk for moe"
# the VM mutator (v1.7+): a firmware UUID and serial on create
moe_serial=$(jp vm/moe .spec.template.spec.domain.firmware.serial)
moe_uuid=$(jp vm/moe .spec.template.spec.domain.firmware.uuid)
[[ $moe_uuid =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] && [ -n "$moe_serial" ] ||
    fail "no firmware defaults: uuid '$moe_uuid' serial '$moe_serial'"
disk_write moe-root 4096 "state one"
sed 's/snap-larry/snap-moe/; s/name: larry/name: moe/' "$wd/snap.yaml" | k create -f - >/dev/null ||
    fail "create snap-moe"
k wait vmsnapshot snap-moe --for condition=Ready --timeout=20s >/dev/null || fail "snap-moe not ready"
vs=$(jp "vmsnapshotcontent/$(jp vmsnapshot/snap-moe .status.virtualMachineSnapshotContentName)" \
    '.spec.volumeBackups[0].volumeSnapshotName')
disk_write moe-root 4096 "state two"
cat >"$wd/restore.yaml" <<'Y'
apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineRestore
metadata: {name: restore-moe}
spec:
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: moe}
  virtualMachineSnapshotName: snap-moe
Y
# the CRD's enum, as the API server checks it (before any webhook)
out=$(sed '$a\  targetReadinessPolicy: Sometimes' "$wd/restore.yaml" | k create -f - 2>&1) &&
    fail "an unknown targetReadinessPolicy was accepted"
grep -qF 'spec.targetReadinessPolicy: Unsupported value: "Sometimes": supported values: "StopTarget", "WaitGracePeriod", "FailImmediate", "WaitEventually"' <<<"$out" ||
    fail "the enum: $out"
# the restore webhook: patches are split on "," and ":"
out=$({ cat "$wd/restore.yaml"
        echo "  patches: ['{\"op\": \"replace\", \"path\": \"/metadata/name\", \"value\": \"x\"}']"; } |
      k create -f - 2>&1) && fail "a patch of /metadata/name was admitted"
grep -qF 'patching is valid only for elements under /spec/ only:  "path": "/metadata/name"' <<<"$out" ||
    fail "the patch path rule: $out"
# a restore held by the fault: the VM cannot be started meanwhile
k annotate vm moe fake.vmsnapfs.io/restore-delay=4 >/dev/null
k create -f "$wd/restore.yaml" >/dev/null || fail "kubectl create a VirtualMachineRestore"
[ "$(jp vmrestore/restore-moe .spec.targetReadinessPolicy)" = WaitGracePeriod ] ||
    fail "no CRD default: $(jp vmrestore/restore-moe .spec)"
wait_until 10 eval '[ "$(jp vm/moe .status.restoreInProgress)" = restore-moe ]' ||
    fail "the VM is not marked: $(jp vm/moe .status)"
out=$(k patch vm moe --type merge -p '{"spec":{"runStrategy":"Always"}}' 2>&1) &&
    fail "the run strategy changed during a restore"
grep -qF 'Cannot update VM runStrategy until restore "restore-moe" completes' <<<"$out" ||
    fail "the VM webhook: $out"
[ "$(jp vmrestore/restore-moe '.status.conditions[?(@.type=="Ready")].reason')" = "Waiting for new PVCs" ] ||
    fail "restore-delay: $(jp vmrestore/restore-moe .status.conditions)"
k wait --for=condition=Ready vmrestore/restore-moe --timeout=30s >/dev/null ||
    fail "kubectl wait on the restore: $(jp vmrestore/restore-moe .status)"
[ "$(jp vmrestore/restore-moe .status.complete)" = true ] || fail "not complete"
[ -n "$(jp vmrestore/restore-moe .status.restoreTime)" ] || fail "no restoreTime"
new=$(jp vm/moe '.spec.template.spec.volumes[0].persistentVolumeClaim.claimName')
[ "$new" = "restore-$(jp vmrestore/restore-moe .metadata.uid)-root" ] ||
    fail "the restored VM's claim: $new"
[ "$(jp vmrestore/restore-moe '.status.restores[0].persistentVolumeClaim')" = "$new" ] ||
    fail "status.restores: $(jp vmrestore/restore-moe .status.restores)"
cmp "$data/pvc-$new.img" "$data/vs-$vs.img" || fail "the new claim does not hold the snapshot's bytes"
[ "$(at "$data/pvc-$new.img" 4096 9)" = "state one" ] || fail "the new claim's data"
[ "$(at "$data/pvc-moe-root.img" 4096 9)" = "state two" ] || fail "the old claim was touched"
[ "$(jp vm/moe .spec.runStrategy)" = Halted ] || fail "the restored VM's run strategy"
[ -z "$(jp vm/moe .status.restoreInProgress)" ] || fail "restoreInProgress stays"
[ "$(jp vm/moe '.metadata.annotations.restore\.kubevirt\.io/lastRestoreUID')" = \
  "restore-moe-$(jp vmrestore/restore-moe .metadata.uid)" ] || fail "lastRestoreUID"
k get pvc moe-root >/dev/null || fail "RandomizeNames deleted the old claim"
k annotate vm moe fake.vmsnapfs.io/restore-delay- >/dev/null
# another restore of the same target while one is not complete: refused
sed 's/restore-moe/stuck/; s/snap-moe/no-such-snapshot/' "$wd/restore.yaml" | k create -f - >/dev/null ||
    fail "create a restore of no snapshot"
wait_until 10 eval '[ "$(jp vmrestore/stuck ".status.conditions[?(@.type==\"Ready\")].reason")" = \
    "VMSnapshot default/no-such-snapshot does not exist" ]' ||
    fail "a missing snapshot: $(jp vmrestore/stuck .status.conditions)"
out=$(sed 's/restore-moe/again/' "$wd/restore.yaml" | k create -f - 2>&1) &&
    fail "a second restore of moe was admitted"
grep -qF 'spec.target: VirtualMachineRestore "stuck" in progress' <<<"$out" || fail "in progress: $out"
k delete vmrestore stuck --timeout=20s >/dev/null || fail "delete a restore (its finalizer)"
# FailImmediate on a running VM: Failure at once, never tried again
sed 's/restore-moe/restore-larry/; s/name: moe/name: larry/; s/snap-moe/snap-x/; $a\  targetReadinessPolicy: FailImmediate' \
    "$wd/restore.yaml" | k create -f - >/dev/null || fail "create the FailImmediate restore"
k wait --for=condition=Failure vmrestore/restore-larry --timeout=20s >/dev/null ||
    fail "FailImmediate: $(jp vmrestore/restore-larry .status)"
for c in Failure Progressing Ready; do
    [ "$(jp vmrestore/restore-larry ".status.conditions[?(@.type==\"$c\")].reason")" = \
      "Restore target VMI must be powered off before restore operation" ] ||
        fail "FailImmediate $c: $(jp vmrestore/restore-larry .status.conditions)"
done
[ "$(jp vmrestore/restore-larry .status.complete)" = false ] || fail "FailImmediate complete"
[ "$(jp vm/larry .status.printableStatus)" = Running ] || fail "FailImmediate touched the VM"

# ---- VirtualMachineClone (kubevirt-api.md 11) -----------------------------------------
cat >"$wd/clone.yaml" <<'Y'
apiVersion: clone.kubevirt.io/v1beta1
kind: VirtualMachineClone
metadata: {name: clone-moe}
spec:
  source: {apiGroup: snapshot.kubevirt.io, kind: VirtualMachineSnapshot, name: snap-moe}
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: moe-clone}
  labelFilters: ["app"]
  newMacAddresses: {default: "02-00-00-00-00-2a"}
Y
k create -f "$wd/clone.yaml" >/dev/null || fail "kubectl create a VirtualMachineClone"
k wait --for condition=Ready vmclone/clone-moe --timeout=30s >/dev/null ||
    fail "the clone: $(jp vmclone/clone-moe .status)"
[ "$(jp vmclone/clone-moe .status.phase)" = Succeeded ] || fail "clone phase"
[ "$(jp vmclone/clone-moe .status.targetName)" = moe-clone ] || fail "clone targetName"
[ "$(jp vm/moe-clone .spec.runStrategy)" = Halted ] || fail "the clone is not Halted"
[ "$(jp vm/moe-clone '.spec.template.spec.domain.devices.interfaces[0].macAddress')" = 02-00-00-00-00-2a ] ||
    fail "the clone's MAC: $(jp vm/moe-clone '.spec.template.spec.domain.devices.interfaces[0]')"
serial=$(jp vm/moe-clone .spec.template.spec.domain.firmware.serial)
[ -n "$serial" ] && [ "$serial" != "$moe_serial" ] || fail "the clone's serial: '$serial'"
[ "$(jp vm/moe-clone .spec.template.spec.domain.firmware.uuid)" != "$moe_uuid" ] || fail "the clone's UUID"
[ "$(jp vm/moe-clone .metadata.labels)" = '{"app":"moe"}' ] ||
    fail "labelFilters: $(jp vm/moe-clone .metadata.labels)"
claim=$(jp vm/moe-clone '.spec.template.spec.volumes[0].persistentVolumeClaim.claimName')
cmp "$data/pvc-$claim.img" "$data/vs-$vs.img" || fail "the clone's disk"
wait_until 10 eval '[ -z "$(jp vmclone/clone-moe .status.restoreName)" ]' ||
    fail "the clone's restore stays: $(jp vmclone/clone-moe .status)"
[ "$(k get vmrestore -o name | grep -c tmp-restore)" = 0 ] || fail "a temporary restore stays"
# a MAC address with ":": the generated restore is refused by the restore
# webhook, again and again: the clone stays in RestoreInProgress
sed 's/clone-moe/clone-colon/; s/moe-clone/moe-colon/; s/02-00-00-00-00-2a/02:00:00:00:00:2b/' \
    "$wd/clone.yaml" | k create -f - >/dev/null || fail "the clone webhook refused a MAC with colons"
wait_until 10 eval '[ "$(jp vmclone/clone-colon .status.phase)" = RestoreInProgress ]' ||
    fail "clone-colon: $(jp vmclone/clone-colon .status)"
sleep 1
[ "$(jp vmclone/clone-colon .status.phase)" = RestoreInProgress ] && [ -z "$(jp vmclone/clone-colon .status.restoreName)" ] ||
    fail "clone-colon moved on: $(jp vmclone/clone-colon .status)"
[ "$(jp vmclone/clone-colon '.status.conditions[?(@.type=="Progressing")].reason')" = "Still processing" ] ||
    fail "clone-colon conditions: $(jp vmclone/clone-colon .status.conditions)"
k get vm moe-colon >/dev/null 2>&1 && fail "clone-colon made a VM"
# the printer columns
out=$(k get vmclone)
grep -q '^NAME  *PHASE  *SOURCEVIRTUALMACHINE  *TARGETVIRTUALMACHINE$' <<<"$out" || fail "vmclone columns: $out"
grep -q '^clone-moe  *Succeeded  *snap-moe  *moe-clone$' <<<"$out" || fail "vmclone row: $out"
grep -q '^clone-colon  *RestoreInProgress  *snap-moe  *moe-colon$' <<<"$out" || fail "vmclone row: $out"
# the clone webhook
out=$(sed 's/clone-moe/bad/; s/02-00-00-00-00-2a/00-11-22/' "$wd/clone.yaml" | k create -f - 2>&1) &&
    fail "a 3-octet MAC was admitted"
grep -qF 'spec.newMacAddresses.default: interface default has malformed MAC address (00-11-22).' <<<"$out" ||
    fail "the clone webhook: $out"

# backup.kubevirt.io (kubevirt-api.md 12) as kubectl sees it
out=$(k api-resources --api-group=backup.kubevirt.io)
grep -q '^virtualmachinebackups  *vmbackup,vmbackups  *backup.kubevirt.io/v1alpha1  *true  *VirtualMachineBackup$' <<<"$out" ||
    fail "backup api-resources: $out"
cat <<'Y' | k create -f - >/dev/null || fail "the CBT VM"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cbt-root}
spec: {storageClassName: fake, accessModes: [ReadWriteOnce], resources: {requests: {storage: 8Mi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cbt-scratch}
spec: {storageClassName: fake, accessModes: [ReadWriteOnce], resources: {requests: {storage: 8Mi}}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: cbt, labels: {changedBlockTracking: "true"}}
spec:
  runStrategy: Always
  template:
    spec:
      domain: {devices: {disks: [{name: root, disk: {bus: virtio}}]}}
      volumes: [{name: root, persistentVolumeClaim: {claimName: cbt-root}}]
---
apiVersion: backup.kubevirt.io/v1alpha1
kind: VirtualMachineBackupTracker
metadata: {name: cbt-tracker}
spec: {source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: cbt}}
---
apiVersion: v1
kind: Secret
metadata: {name: cbt-token}
stringData: {token: not-a-secret-here}
Y
wait_until 10 eval '[ "$(jp vm/cbt .status.changedBlockTracking.state)" = Enabled ]' ||
    fail "changed block tracking: $(jp vm/cbt .status.changedBlockTracking)"
backup() {  # backup NAME [EXTRA SPEC LINES]
    printf 'apiVersion: backup.kubevirt.io/v1alpha1\nkind: VirtualMachineBackup\nmetadata: {name: %s}\nspec:\n  source: {apiGroup: backup.kubevirt.io, kind: VirtualMachineBackupTracker, name: cbt-tracker}\n  pvcName: cbt-scratch\n%s\n' "$1" "${2:-}" |
        k create -f - 2>&1
}
# CEL: a token is required in pull mode
out=$(backup bad '  mode: Pull') && fail "a pull backup without tokenSecretRef was admitted"
grep -qF 'The VirtualMachineBackup "bad" is invalid: spec: Invalid value: "object": tokenSecretRef is required when mode is Pull' <<<"$out" ||
    grep -qF 'tokenSecretRef is required when mode is Pull' <<<"$out" || fail "CEL: $out"
backup b1 $'  mode: Pull\n  tokenSecretRef: cbt-token\n  ttlDuration: 3s' >/dev/null || fail "backup b1"
k wait --for=condition=Complete --timeout=30s vmbackup/b1 >/dev/null || fail "b1 did not complete at its TTL"
out=$(k get vmbackup b1)
grep -q '^b1  *VirtualMachineBackupTracker  *cbt-tracker  *Full  *b1-' <<<"$out" || fail "vmbackup columns: $out"
[ "$(jp vmbackuptracker/cbt-tracker .status.latestCheckpoint.name)" = "$(jp vmbackup/b1 .status.checkpointName)" ] ||
    fail "the tracker did not move to b1's checkpoint"
backup b2 $'  mode: Pull\n  tokenSecretRef: cbt-token' >/dev/null || fail "backup b2"
progressing() { k get vmbackup "$1" -o 'jsonpath={.status.conditions[?(@.type=="Progressing")].reason}'; }
wait_until 20 eval '[ "$(progressing b2)" = ExportReady ]' ||
    fail "b2 is not ExportReady: $(jp vmbackup/b2 .status)"
[ "$(jp vmbackup/b2 .status.type)" = Incremental ] || fail "b2 is not incremental"
out=$(backup b3 $'  mode: Pull\n  tokenSecretRef: cbt-token') && fail "a second backup of one source was admitted"
grep -qF 'VirtualMachineBackup "b2" in progress for source' <<<"$out" || fail "in progress: $out"
url=$(jp vmbackup/b2 '.status.includedVolumes[0].mapEndpoint')
curl -sS --cacert "$KUBE_DIR/ca.crt" -H 'x-kubevirt-export-token: not-a-secret-here' "$url" >"$wd/map.json" ||
    fail "the map endpoint"
grep -q '"next_offset": null' "$wd/map.json" || fail "map: $(cat "$wd/map.json")"
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$KUBE_DIR/ca.crt" "$url")" = 401 ] ||
    fail "the map endpoint without the token"
k delete vmbackup b2 >/dev/null || fail "delete b2"
wait_until 10 eval '! k get vmbackup b2 >/dev/null 2>&1' || fail "b2 stays after delete"
[[ "$(jp vmbackuptracker/cbt-tracker .status.latestCheckpoint.name)" == b2-* ]] ||
    fail "a deleted pull backup did not move the tracker"

# a cluster without clone.kubevirt.io (--no-clone)
nc=$wd/noclone
mkdir -p "$nc"
python3 "$srcdir/tests/kube/fake-apiserver.py" --dir "$nc" --port-file "$nc/port" --no-clone 2>"$nc/server.log" &
ncpid=$!
at_exit "kill $ncpid 2>/dev/null; wait $ncpid 2>/dev/null || true"
wait_until 20 test -s "$nc/port" || fail "the --no-clone server did not start: $(cat "$nc/server.log")"
out=$(KUBECONFIG=$nc/kubeconfig k get vmclone 2>&1) && fail "vmclone served with --no-clone"
grep -qF 'the server doesn'"'"'t have a resource type "vmclone"' <<<"$out" || fail "--no-clone: $out"
out=$(KUBECONFIG=$nc/kubeconfig k get --raw /apis/clone.kubevirt.io/v1beta1/namespaces/default/virtualmachineclones 2>&1) &&
    fail "the clone URL answered with --no-clone"
grep -q NotFound <<<"$out" || fail "--no-clone URL: $out"
KUBECONFIG=$nc/kubeconfig k get vmrestore >/dev/null 2>&1 || fail "--no-clone took more than clones"
echo "PASS: $testname"
