#!/usr/bin/env bash
# bench/restore.sh: latency of `echo S > VM/restore` and of
# `echo NEW > VM/snapshots/S/clone` on a 64 MiB and a 2 GiB disk (40 MiB of
# data each; the VMs are stopped, so the figures are vmsnapfs's own work,
# not a guest's shutdown and boot), median of RUNS (5). In the same run the
# peers: `virt-clone --auto-clone` (Debian's virtinst; installed if
# missing) for clone, and for restore the virsh script an admin would
# write (qemu-img create on the snapshot's layer + virsh define).
# Targets (issue 5): under 1 s, 2 GiB / 64 MiB ratio <= 1.1. As root.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
vmsnapfs=${VMSNAPFS:-$top/build/fs/vmsnapfs}
n=${RUNS:-5}
prefix="vmsnapfs-bench-$$-"
. "$top/tests/guest/guest.sh"
guest_build >/dev/null 2>&1
libvirt_ensure_running
command -v virt-clone >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq virtinst >/dev/null
work=$(mktemp -d /var/tmp/vmsnapfs-bench.XXXXXX)
chmod 0755 "$work"
mnt=$work/mnt
mkdir -p "$mnt"
export VMSNAPFS_STATE_DIR=$work/state

cleanup() {
    grep -q " $mnt fuse.vmsnapfs " /proc/mounts && fusermount3 -u "$mnt"
    guest_cleanup_prefix "$prefix" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

for size in 64M 2G; do
    guest_make_disk "$work/$size.qcow2" "$size" qcow2
    guest_define "$prefix$size" --disk "$work/$size.qcow2:qcow2"
    guest_start "$prefix$size"
done
"$vmsnapfs" qemu:///system "$mnt"
for size in 64M 2G; do
    vm=$prefix$size
    guest_wait_agent "$vm"
    guest_exec "$vm" 'dd if=/dev/urandom of=/data/fill bs=1M count=40 2>/dev/null && sync'
    mkdir "$mnt/$vm/snapshots/s0"
    guest_shutdown "$vm"
done

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A rs cl pr pc layer lat clat peer pclat
for size in 64M 2G; do
    vm=$prefix$size
    layer[$size]=$(qemu-img info -U --backing-chain --output=json \
        "$(virsh -c qemu:///system snapshot-dumpxml "$vm" s0 | sed -n "s/.*<source file='\([^']*\)'.*/\1/p" | head -n 1)" |
        sed -n 's/.*"filename": "\([^"]*\)".*/\1/p' | sed -n 2p)
done
# the sizes take turns (and turns about who goes first), so both see the
# same number of domains and snapshots on the host: a restore compares its
# snapshot with every other domain, which grows with each clone made here
for ((i = 0; i < n; i++)); do
    order="64M 2G"
    ((i % 2)) && order="2G 64M"
    for size in $order; do
        vm=$prefix$size
        # the safety snapshot's name has a one-second stamp: a restore in
        # the same second as the last one would wait for the next second
        sleep 1.1
        t0=$(ms_now)
        echo s0 >"$mnt/$vm/restore" || { cat "$mnt/$vm/restore"; exit 1; }
        t1=$(ms_now)
        lat[$size]+=" $((t1 - t0))"
        t0=$(ms_now)
        echo "${prefix}c${size,,}-$i" >"$mnt/$vm/snapshots/s0/clone" ||
            { tail -n 3 "$mnt/$vm/events"; exit 1; }
        t1=$(ms_now)
        clat[$size]+=" $((t1 - t0))"
        # the admin's script: an overlay on the layer, the definition back
        t0=$(ms_now)
        qemu-img create -q -f qcow2 -F qcow2 -b "${layer[$size]}" "$work/peer-$size-$i.qcow2"
        virsh -c qemu:///system snapshot-dumpxml "$vm" s0 |
            sed -n '/<inactiveDomain/,/<\/inactiveDomain>/p' |
            sed 's/inactiveDomain/domain/g' |
            sed "s#<source file='[^']*'/>#<source file='$work/peer-$size-$i.qcow2'/>#" \
                >"$work/peer.xml"
        virsh -c qemu:///system define "$work/peer.xml" >/dev/null
        t1=$(ms_now)
        peer[$size]+=" $((t1 - t0))"
        t0=$(ms_now)
        virt-clone --connect qemu:///system --original "$vm" --name "${prefix}v$size-$i" \
            --file "$work/virt-clone-$size-$i.qcow2" >/dev/null 2>&1
        t1=$(ms_now)
        pclat[$size]+=" $((t1 - t0))"
    done
done
for size in 64M 2G; do
    rs[$size]=$(printf '%s\n' ${lat[$size]} | median)
    cl[$size]=$(printf '%s\n' ${clat[$size]} | median)
    pr[$size]=$(printf '%s\n' ${peer[$size]} | median)
    pc[$size]=$(printf '%s\n' ${pclat[$size]} | median)
    echo "$size disk: restore median ${rs[$size]} ms (all:${lat[$size]}); clone median ${cl[$size]} ms (all:${clat[$size]})"
    echo "$size disk: peers: qemu-img create + virsh define median ${pr[$size]} ms (all:${peer[$size]}); virt-clone median ${pc[$size]} ms (all:${pclat[$size]})"
done
awk -v r2="${rs[2G]}" -v r6="${rs[64M]}" -v c2="${cl[2G]}" -v c6="${cl[64M]}" \
    -v p2="${pr[2G]}" -v v2="${pc[2G]}" 'BEGIN {
    printf "ratio restore 2 GiB / 64 MiB: %.2f\n", r2 / r6
    printf "ratio clone 2 GiB / 64 MiB: %.2f\n", c2 / c6
    printf "ratio restore / (qemu-img create + virsh define), 2 GiB: %.2f\n", r2 / p2
    printf "ratio clone / virt-clone, 2 GiB: %.2f\n", c2 / v2 }'
