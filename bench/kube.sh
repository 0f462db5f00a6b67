#!/usr/bin/env bash
# bench/kube.sh [VMS] [NAMESPACES]: the KubeVirt backend against the fake
# API server (tests/kube) with VMS (1000) stopped VMs in NAMESPACES (20):
#   - a warm `ls -lR` of the whole mount: its time (median of 5) and the API
#     requests it makes (target: none), against `kubectl get vm -A` in the
#     same run (target: faster);
#   - API requests per mkdir and per rmdir of a snapshot;
#   - the daemon's RSS with that cluster in its caches (target: <= 30 MiB);
#   - the throughput of a stopped VM's 2 GiB disk read through the mount
#     (VirtualMachineExport, Range requests) against curl fetching the same
#     export URL (target: >= 0.9 of curl's);
#   - the latency of a restore (`echo S > VM/restore` of a stopped VM, with
#     its safety snapshot) against kubectl creating a VirtualMachineRestore
#     and `kubectl wait`ing for it (no safety snapshot), median of 3.
# Needs root, /dev/fuse, python3, openssl, curl, kubectl; builds with
# tools/build.sh first if there is no build.
set -euo pipefail
cd "$(dirname "$0")/.."
vms=${1:-1000}
nss=${2:-20}
[ -x build/fs/vmsnapfs ] || tools/build.sh >/dev/null
wd=$(mktemp -d /tmp/vmsnapfs-bench-kube-XXXXXX)
mnt=$wd/mnt
mkdir -p "$mnt" "$wd/cluster"
cleanup() {
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
    [ -n "${daemon:-}" ] && { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; }
    [ -n "${server:-}" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
    rm -rf "$wd"
}
trap cleanup EXIT

python3 tests/kube/fake-apiserver.py --dir "$wd/cluster" --port-file "$wd/port" \
    --populate "$vms:$nss" 2>"$wd/server.log" &
server=$!
for ((i = 0; i < 600; i++)); do [ -s "$wd/port" ] && break; sleep 0.05; done
[ -s "$wd/port" ] || { cat "$wd/server.log" >&2; echo "bench/kube: no server" >&2; exit 1; }
export KUBECONFIG=$wd/cluster/kubeconfig
url=https://127.0.0.1:$(cat "$wd/port")
api() {
    curl -sS --cacert "$wd/cluster/ca.crt" -H "Authorization: Bearer $(cat "$wd/cluster/token")" \
        -X "$1" "$url$2"
}
requests() { api GET /fake/requests | grep -o '"[A-Z]* /[^"]*"' | grep -vc '?watch=' || true; }

build/fs/vmsnapfs -f kubevirt:// "$mnt" 2>"$wd/vmsnapfs.log" &
daemon=$!
for ((i = 0; i < 600; i++)); do grep -q " $mnt fuse" /proc/mounts && break; sleep 0.05; done
grep -q " $mnt fuse" /proc/mounts || { cat "$wd/vmsnapfs.log" >&2; exit 1; }

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }

ls -lR "$mnt" >/dev/null              # warm: the kernel's and the model's caches
count=$(find "$mnt" -mindepth 2 -maxdepth 2 -type d | wc -l)
api DELETE /fake/requests >/dev/null
ls_ms=$(for i in 1 2 3 4 5; do ms ls -lR "$mnt"; done | median)
ls_req=$(requests)
kc_ms=$(for i in 1 2 3 4 5; do ms kubectl get vm -A; done | median)

vm=$mnt/ns00/vm0000
api DELETE /fake/requests >/dev/null
mkdir "$vm/snapshots/bench-1"
mk_req=$(requests)
api DELETE /fake/requests >/dev/null
rmdir "$vm/snapshots/bench-1"
rm_req=$(requests)
rss=$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$daemon/status")

# restore latency: through the mount (safety snapshot, VirtualMachineRestore,
# until complete, deleted) against kubectl (create, wait for Ready)
mkdir "$vm/snapshots/bench-r"
rs_ms=$(for i in 1 2 3; do ms sh -c "echo bench-r > '$vm/restore'"; done | median)
grep -qx "phase: Succeeded" "$vm/restore" || { cat "$vm/restore" >&2; exit 1; }
krestore() {
    kubectl create -f - >/dev/null <<Y &&
apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineRestore
metadata: {name: bench-k$1, namespace: ns00}
spec:
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: vm0000}
  virtualMachineSnapshotName: bench-r
Y
    kubectl -n ns00 wait --for=condition=Ready "vmrestore/bench-k$1" --timeout=60s >/dev/null
}
kr_ms=$(for i in 1 2 3; do ms krestore "$i"; done | median)

# export throughput: cp of a stopped VM's 2 GiB disk through the mount
# (a VirtualMachineExport read with Range requests) against curl fetching
# the same disk.img URL of an export in one GET; best of 3, page caches warm
disk=$wd/cluster/data/ns01/pvc-vm0001-root.img
for ((i = 0; i < 5; i++)); do [ -s "$disk" ] || sleep 1; done
head -c $((2 << 30)) /dev/urandom | dd of="$disk" conv=notrunc status=none
kubectl create -f - >/dev/null <<Y
apiVersion: export.kubevirt.io/v1beta1
kind: VirtualMachineExport
metadata: {name: bench-curl, namespace: ns01}
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: vm0001}
Y
kubectl -n ns01 wait --for=jsonpath='{.status.phase}'=Ready vmexport/bench-curl --timeout=60s >/dev/null
xtoken=$(kubectl -n ns01 get secret export-token-bench-curl -o jsonpath='{.data.token}' | base64 -d)
xurl=$(kubectl -n ns01 get vmexport bench-curl -o jsonpath='{.status.links.external.volumes[0].formats[0].url}')
best() { sort -n | head -n 1; }
curl_ms=$(for i in 1 2 3; do ms curl -sf --cacert "$wd/cluster/ca.crt" -H "x-kubevirt-export-token: $xtoken" -o /dev/null "$xurl"; done | best)
cat_ms=$(for i in 1 2 3; do ms cp "$mnt/ns01/vm0001/volumes/root.img" /dev/null; done | best)
cmp "$mnt/ns01/vm0001/volumes/root.img" "$disk" || { echo "bench/kube: the copy differs" >&2; exit 1; }
mibs() { awk -v ms="$1" 'BEGIN { printf "%.0f", 2048 * 1000 / (ms ? ms : 1) }'; }

echo "bench/kube: $count VMs in $nss namespaces (fake API server)"
echo "  warm ls -lR of the mount: ${ls_ms} ms, $ls_req API requests; kubectl get vm -A: ${kc_ms} ms (ratio $(awk -v a="$ls_ms" -v b="$kc_ms" 'BEGIN { printf "%.2f", a / (b ? b : 1) }'))"
echo "  API requests: mkdir $mk_req, rmdir $rm_req (watches not counted)"
echo "  daemon RSS: ${rss} MiB"
echo "  restore of a stopped VM: echo S > VM/restore ${rs_ms} ms (with its safety snapshot); kubectl create vmrestore + wait ${kr_ms} ms (ratio $(awk -v a="$rs_ms" -v b="$kr_ms" 'BEGIN { printf "%.2f", a / (b ? b : 1) }'))"
echo "  export of a 2 GiB disk: cp through the mount ${cat_ms} ms ($(mibs "$cat_ms") MiB/s), curl of disk.img ${curl_ms} ms ($(mibs "$curl_ms") MiB/s): ratio $(awk -v a="$curl_ms" -v b="$cat_ms" 'BEGIN { printf "%.2f", a / (b ? b : 1) }') (target >= 0.9)"
