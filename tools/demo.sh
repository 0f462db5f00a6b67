#!/usr/bin/env bash
# tools/demo.sh [up|kube|down]: the main job on a fresh Debian 12 machine,
# as root: install what is needed, build, start libvirt, define and boot a
# small demo VM named `demo` (a guest with a guest agent, built from Debian
# packages), and mount vmsnapfs on /mnt/vmsnapfs. `kube`: the same for the
# KubeVirt backend against the fake API server of the tests (no cluster
# needed), mounted on /mnt/vmsnapfs-kube. `down` undoes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
mnt=${VMSNAPFS_MOUNT:-/mnt/vmsnapfs}
state=/var/lib/vmsnapfs-demo
vm=demo
kmnt=${VMSNAPFS_KUBE_MOUNT:-/mnt/vmsnapfs-kube}
kdir=$state/kube

export VMSNAPFS_GUEST_CACHE=$state/guest
# the demo daemon's durable state (locks, records, restore plans) goes
# with the demo at `down`
export VMSNAPFS_STATE_DIR=$state/state
# shellcheck source=../tests/guest/guest.sh
. "$top/tests/guest/guest.sh"

down() {
    local m d
    for m in "$mnt" "$kmnt"; do
        if grep -q " $m fuse.vmsnapfs " /proc/mounts; then
            fusermount3 -u "$m"
        fi
    done
    if [ -s "$kdir/server.pid" ]; then
        kill "$(cat "$kdir/server.pid")" 2>/dev/null || true
    fi
    if command -v virsh >/dev/null; then
        for d in "$vm" "$vm-copy"; do     # the VM, and the clone the list suggests
            if guest_virsh dominfo "$d" >/dev/null 2>&1; then
                guest_undefine "$d"
            fi
        done
    fi
    rm -rf "$state"
    echo "demo: removed the mounts, the VM '$vm', the fake cluster and $state"
}

# The KubeVirt backend against tests/kube/fake-apiserver.py: a cluster with
# KubeVirt's snapshot controller and a guest agent that answers freeze.
kube() {
    tools/install-deps.sh
    tools/build.sh build
    mkdir -p "$kdir"
    chmod 0700 "$kdir"
    if ! { [ -s "$kdir/server.pid" ] && kill -0 "$(cat "$kdir/server.pid")" 2>/dev/null; }; then
        rm -f "$kdir/port"
        setsid python3 "$top/tests/kube/fake-apiserver.py" --dir "$kdir" \
            --port-file "$kdir/port" --populate 4:2 >"$kdir/server.log" 2>&1 </dev/null &
        echo $! >"$kdir/server.pid"
        for _ in $(seq 100); do [ -s "$kdir/port" ] && break; sleep 0.1; done
        [ -s "$kdir/port" ] || { cat "$kdir/server.log" >&2; exit 1; }
    fi
    export KUBECONFIG=$kdir/kubeconfig
    # one VM runs, with a guest agent
    kubectl -n ns00 patch vm vm0000 --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
    if ! grep -q " $kmnt fuse.vmsnapfs " /proc/mounts; then
        mkdir -p "$kmnt"
        "$top/build/fs/vmsnapfs" kubevirt:// "$kmnt"
    fi
    cat <<TRY

vmsnapfs is mounted on $kmnt, from a fake KubeVirt cluster (tests/kube/
fake-apiserver.py, 4 VMs in 2 namespaces). Try:
  export KUBECONFIG=$KUBECONFIG
  ls $kmnt $kmnt/ns00
  cat $kmnt/ns00/vm0000/state $kmnt/ns00/vm0000/agent
  mkdir $kmnt/ns00/vm0000/snapshots/first     # a VirtualMachineSnapshot, quiesced
  cat $kmnt/ns00/vm0000/snapshots/first/phase $kmnt/ns00/vm0000/snapshots/first/resources
  kubectl get vmsnapshot -A                    # the cluster sees it
  kubectl -n ns01 patch vm vm0001 --type merge -p '{"spec":{"runStrategy":"Always"}}'
  cat $kmnt/ns01/vm0001/state                  # changes show at once
  cp --sparse=always $kmnt/ns00/vm0000/volumes/root.img /tmp/   # a running VM's disk, one point in time
  cp -r --sparse=always $kmnt/ns00/vm0000/snapshots/first /tmp/backup   # an offline backup
  echo 'first policy=StopTarget' > $kmnt/ns00/vm0000/restore; cat $kmnt/ns00/vm0000/restore
  echo copy > $kmnt/ns00/vm0000/snapshots/first/clone   # VM copy, stopped, new MACs
  rmdir $kmnt/ns00/vm0000/snapshots/first

Stop it all with: tools/demo.sh down
TRY
}

up() {
    tools/install-deps.sh
    tools/build.sh build
    libvirt_ensure_running
    mkdir -p "$state"
    chmod 0755 "$state"
    guest_build >/dev/null

    if ! guest_virsh dominfo "$vm" >/dev/null 2>&1; then
        mkdir -p "$state/seed"
        echo "hello from the demo VM" >"$state/seed/hello.txt"
        guest_make_disk "$state/demo.qcow2" 256M qcow2 "$state/seed"
        guest_define "$vm" --disk "$state/demo.qcow2:qcow2"
    fi
    if [ "$(guest_state "$vm")" != running ]; then
        guest_start "$vm"
    fi
    echo "demo: waiting for the guest agent of '$vm' (TCG boot, ~10 s)"
    guest_wait_agent "$vm" 180

    if ! grep -q " $mnt fuse.vmsnapfs " /proc/mounts; then
        mkdir -p "$mnt"
        "$top/build/fs/vmsnapfs" qemu:///system "$mnt"
    fi
    cat <<TRY

vmsnapfs is mounted on $mnt. Try:
  ls $mnt
  cat $mnt/$vm/state $mnt/$vm/agent
  head $mnt/$vm/domain.xml
  ls -l $mnt/$vm/volumes
  mkdir $mnt/$vm/snapshots/first            # a quiesced snapshot
  cat $mnt/$vm/snapshots/first/indications
  echo 'first policy=StopTarget' > $mnt/$vm/restore; cat $mnt/$vm/restore
  echo $vm-copy > $mnt/$vm/snapshots/first/clone   # a new VM, stopped
  virsh destroy $vm; cat $mnt/$vm/state     # changes show at once
  man -l build/fs/vmsnapfs.8

Stop it all with: tools/demo.sh down
TRY
}

case "${1:-up}" in
up) up ;;
kube) kube ;;
down) down ;;
*) echo "usage: tools/demo.sh [up|kube|down]" >&2; exit 2 ;;
esac
