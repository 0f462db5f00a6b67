#!/usr/bin/env bash
# tools/demo.sh [up|down]: the main job on a fresh Debian 12 machine, as
# root: install what is needed, build, start libvirt, define and boot a
# small demo VM named `demo` (a guest with a guest agent, built from Debian
# packages), and mount vmsnapfs on /mnt/vmsnapfs. `down` undoes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
mnt=${VMSNAPFS_MOUNT:-/mnt/vmsnapfs}
state=/var/lib/vmsnapfs-demo
vm=demo

export VMSNAPFS_GUEST_CACHE=$state/guest
# the demo daemon's durable state (locks, records, restore plans) goes
# with the demo at `down`
export VMSNAPFS_STATE_DIR=$state/state
# shellcheck source=../tests/guest/guest.sh
. "$top/tests/guest/guest.sh"

down() {
    if grep -q " $mnt fuse.vmsnapfs " /proc/mounts; then
        fusermount3 -u "$mnt"
    fi
    local d
    for d in "$vm" "$vm-copy"; do     # the VM, and the clone the list suggests
        if guest_virsh dominfo "$d" >/dev/null 2>&1; then
            guest_undefine "$d"
        fi
    done
    rm -rf "$state"
    echo "demo: removed the mount, the VM '$vm' and $state"
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
down) down ;;
*) echo "usage: tools/demo.sh [up|down]" >&2; exit 2 ;;
esac
