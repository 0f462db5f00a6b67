#!/usr/bin/env bash
# bench/export.sh: exporting disks through vmsnapfs against qemu-img.
#
# A 1 GiB disk holding ~700 MiB of random data in a 3-layer qcow2 chain,
# and a 4 GiB disk with little data: `cp VM/volumes/vda.img && sync`
# through the mount against `qemu-img convert -O raw && sync` of the same
# chain, best and median of 5 each (RUNS=N), and the ratios. Targets (issue 3): the
# dense chain within 1.1x of qemu-img; the sparse disk under 0.5 s, sparse.
# As root, with libvirtd running (tools/start-libvirt.sh), a build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."
vmsnapfs=${VMSNAPFS:-$PWD/build/fs/vmsnapfs}
runs=${RUNS:-5}
prefix="vmsnapfs-bench-$$-"
work=$(mktemp -d /var/tmp/vmsnapfs-bench.XXXXXX)
chmod 0755 "$work"
export VMSNAPFS_STATE_DIR=$work/state     # the daemon's records go with the run
mnt=$work/mnt
out=$work/out
mkdir -p "$mnt" "$out"

cleanup() {
    grep -q " $mnt fuse.vmsnapfs " /proc/mounts && fusermount3 -u "$mnt"
    for d in dense sparse; do
        virsh -c qemu:///system undefine "$prefix$d" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

echo "building the disks in $work"
# dense: base 400 MiB random, mid +200 MiB, top +100 MiB (some overwrites)
qemu-img create -q -f qcow2 "$work/base.qcow2" 1G
head -c 400M /dev/urandom >"$work/r1"
qemu-io -f qcow2 -c "write -s $work/r1 0 400M" "$work/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$work/base.qcow2" -F qcow2 "$work/mid.qcow2"
head -c 200M /dev/urandom >"$work/r2"
qemu-io -f qcow2 -c "write -s $work/r2 450M 200M" "$work/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$work/mid.qcow2" -F qcow2 "$work/top.qcow2"
head -c 100M /dev/urandom >"$work/r3"
qemu-io -f qcow2 -c "write -s $work/r3 700M 100M" "$work/top.qcow2" >/dev/null
rm -f "$work/r1" "$work/r2" "$work/r3"
# sparse: 4 GiB with a little data
qemu-img create -q -f qcow2 "$work/sparse.qcow2" 4G
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" -c "write -P 0xa5 3G 1M" "$work/sparse.qcow2" >/dev/null

for d in dense sparse; do
    f=$work/top.qcow2
    [ "$d" = sparse ] && f=$work/sparse.qcow2
    cat >"$work/$d.xml" <<XML
<domain type='qemu'><name>$prefix$d</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='$f'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML
    virsh -c qemu:///system define "$work/$d.xml" >/dev/null
done
"$vmsnapfs" qemu:///system "$mnt"

# seconds of one run of "$@" followed by sync. Warm: the layers are in the
# page cache (as the issue measured), so the disk's noise stays out; the
# copy's own writes are timed through the sync.
timed() {
    rm -f "$out/x"
    sync
    cat "$work"/*.qcow2 >/dev/null
    local t0 t1
    t0=$(date +%s%N)
    "$@"
    sync
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
stats() {   # best and median of the numbers on stdin
    sort -n | awk '{ a[NR] = $1 } END { printf "%s %s\n", a[1], a[int((NR + 1) / 2)] }'
}
measure() {   # name, command...
    local name=$1 i
    shift
    for ((i = 0; i < runs; i++)); do timed "$@"; done | stats
}

for d in dense sparse; do
    f=$work/top.qcow2
    [ "$d" = sparse ] && f=$work/sparse.qcow2
    img=$mnt/$prefix$d/volumes/vda.img
    read -r q_best q_med < <(measure qemu qemu-img convert -O raw "$f" "$out/x")
    read -r c_best c_med < <(measure cp cp "$img" "$out/x")
    cmp -s "$img" "$out/x" || { echo "MISMATCH: $d export differs" >&2; exit 1; }
    alloc=$(du -k "$out/x" | cut -f1)
    echo "$d: qemu-img convert -O raw && sync: best $q_best s, median $q_med s"
    echo "$d: cp through vmsnapfs && sync:    best $c_best s, median $c_med s (result uses $alloc KiB)"
    awk -v c="$c_best" -v q="$q_best" -v cm="$c_med" -v qm="$q_med" -v d="$d" 'BEGIN {
        printf "%s: ratio cp/qemu-img: best %.2f, median %.2f\n", d, c / q, cm / qm }'
done
