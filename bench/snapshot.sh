#!/usr/bin/env bash
# bench/snapshot.sh: mkdir latency of snapshots of a running guest with an
# agent, on a 64 MiB and a 2 GiB disk (median of 5 each), the freeze window
# the daemon measured (status.json), and `virsh snapshot-create-as
# --disk-only --quiesce --atomic` on the same VMs in the same run.
# Targets (issue 4): median mkdir <= 150 ms, freeze window <= 60 ms,
# 2 GiB / 64 MiB latency ratio <= 1.1. As root; builds the test guest.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
vmsnapfs=${VMSNAPFS:-$top/build/fs/vmsnapfs}
n=${RUNS:-5}
prefix="vmsnapfs-bench-$$-"
. "$top/tests/guest/guest.sh"
guest_build >/dev/null 2>&1
libvirt_ensure_running
work=$(mktemp -d /var/tmp/vmsnapfs-bench.XXXXXX)
chmod 0755 "$work"
export VMSNAPFS_STATE_DIR=$work/state     # the daemon's records go with the run
mnt=$work/mnt
mkdir -p "$mnt"

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
for size in 64M 2G; do
    guest_wait_agent "$prefix$size"
    # data on the disk, so that it is not empty
    guest_exec "$prefix$size" 'dd if=/dev/urandom of=/data/fill bs=1M count=40 2>/dev/null && sync'
done
"$vmsnapfs" qemu:///system "$mnt"

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A mk fw vs
for size in 64M 2G; do
    vm=$prefix$size
    lat=() win=()
    for ((i = 0; i < n; i++)); do
        t0=$(ms_now)
        mkdir "$mnt/$vm/snapshots/b$i"
        t1=$(ms_now)
        lat+=($((t1 - t0)))
        win+=("$(grep -o '"freezeWindowMs": [0-9]*' "$mnt/$vm/snapshots/b$i/status.json" | grep -o '[0-9]*$')")
    done
    for ((i = n - 1; i >= 0; i--)); do rmdir "$mnt/$vm/snapshots/b$i"; done
    virsh_lat=()
    for ((i = 0; i < n; i++)); do
        t0=$(ms_now)
        virsh -c qemu:///system snapshot-create-as "$vm" "v$i" --disk-only --quiesce \
            --atomic --diskspec "vda,file=$work/$size.v$i.qcow2" >/dev/null
        t1=$(ms_now)
        virsh_lat+=($((t1 - t0)))
    done
    # vmsnapfs merges virsh's snapshots away too
    sleep 1.1
    for ((i = n - 1; i >= 0; i--)); do rmdir "$mnt/$vm/snapshots/v$i"; done
    mk[$size]=$(printf '%s\n' "${lat[@]}" | median)
    fw[$size]=$(printf '%s\n' "${win[@]}" | median)
    vs[$size]=$(printf '%s\n' "${virsh_lat[@]}" | median)
    echo "$size disk: mkdir median ${mk[$size]} ms (all: ${lat[*]}), freeze window median ${fw[$size]} ms (all: ${win[*]}); virsh snapshot-create-as --quiesce median ${vs[$size]} ms (all: ${virsh_lat[*]})"
done
awk -v a="${mk[2G]}" -v b="${mk[64M]}" -v v="${vs[2G]}" -v m="${mk[2G]}" 'BEGIN {
    printf "ratio mkdir 2 GiB / 64 MiB: %.2f\n", a / b
    printf "ratio mkdir / virsh (2 GiB): %.2f\n", m / v }'
