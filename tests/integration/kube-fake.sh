#!/usr/bin/env bash
# kube-fake.sh: the fake Kubernetes API server (tests/kube/fake-apiserver.py)
# is checked with the real kubectl, so that the KubeVirt backend is tested
# against Kubernetes' behaviour and not against our reading of it:
# discovery, token and client-certificate auth, create/get/list/delete,
# `kubectl wait --for condition=Ready` and `kubectl get -w` (list + watch),
# 410 for an expired resourceVersion, and KubeVirt's snapshot controller:
# phase Succeeded before readyToUse, indications, the deadline, and the
# upstream race that leaves a guest frozen after a failed snapshot.
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
echo "PASS: $testname"
