#!/usr/bin/env bash
# bench/export.sh: exporting disks through vmsnapfs against qemu-img.
#
# A 1 GiB disk holding ~700 MiB of random data in a 3-layer qcow2 chain,
# and a 4 GiB disk with little data: `cp VM/volumes/vda.img && sync`
# through the mount against `qemu-img convert -O raw && sync` (and -W) of
# the same chain, to tmpfs, to disk warm and to disk cold, best and median
# of 5 each (RUNS=N), and the ratios. Targets (issue 13): ratio (qemu-img
# time / cp time) at least 0.9 to tmpfs, 0.95 to disk warm and cold; the
# sparse disk under 0.5 s, and sparse.
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
    for s in inc2 inc1; do
        rmdir "$mnt/${prefix}inc/snapshots/$s" 2>/dev/null || true
    done
    grep -q " $mnt fuse.vmsnapfs " /proc/mounts && fusermount3 -u "$mnt"
    for d in dense sparse inc; do
        for s in $(virsh -c qemu:///system snapshot-list "$prefix$d" --name 2>/dev/null); do
            virsh -c qemu:///system snapshot-delete "$prefix$d" "$s" --metadata >/dev/null 2>&1
        done
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
# inc: 2 GiB, 1.5 GiB of data, for incremental backups
qemu-img create -q -f qcow2 "$work/inc.qcow2" 2G
head -c 1536M /dev/urandom >"$work/r1"
qemu-io -f qcow2 -c "write -s $work/r1 0 1536M" "$work/inc.qcow2" >/dev/null
rm -f "$work/r1"

for d in dense sparse inc; do
    f=$work/top.qcow2
    [ "$d" = sparse ] && f=$work/sparse.qcow2
    [ "$d" = inc ] && f=$work/inc.qcow2
    cat >"$work/$d.xml" <<XML
<domain type='qemu'><name>$prefix$d</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='$f'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML
    virsh -c qemu:///system define "$work/$d.xml" >/dev/null
done
"$vmsnapfs" qemu:///system "$mnt"

# Seconds of one run of "$@" and a sync, in one of three settings:
#   tmpfs: the copy goes to /dev/shm, the layers are in the page cache: no
#          disk in the way, so this is the FUSE path's own cost (what a user
#          with fast storage feels);
#   warm:  the copy goes to disk and is timed through the sync, the layers
#          are in the page cache;
#   cold:  as warm, with every cache dropped first (the layers come from disk).
timed() {   # setting dest command...
    local setting=$1 dest=$2 t0 t1
    shift 2
    rm -f "$dest"
    sync
    if [ "$setting" = cold ]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        cat "$work"/*.qcow2 >/dev/null
    fi
    t0=$(date +%s%N)
    "$@"
    sync
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
stats() {   # best and median of the numbers on stdin
    sort -n | awk '{ a[NR] = $1 } END { printf "%s %s\n", a[1], a[int((NR + 1) / 2)] }'
}
measure() {   # setting dest command...
    local i
    for ((i = 0; i < runs; i++)); do timed "$@"; done | stats
}
ratio() {   # qemu-img seconds, cp seconds: qemu-img time / cp time
    awk -v q="$1" -v c="$2" 'BEGIN { printf "%.2f", q / c }'
}

shm=$(mktemp -d /dev/shm/vmsnapfs-bench.XXXXXX)
trap 'rm -rf "$shm"; cleanup' EXIT
echo "ratio = qemu-img time / cp time, same run (>= 1: cp is as fast); best and median of $runs"
f=$work/top.qcow2
img=$mnt/${prefix}dense/volumes/vda.img
for setting in tmpfs warm cold; do
    dest=$out/x
    [ "$setting" = tmpfs ] && dest=$shm/x
    read -r q_best q_med < <(measure "$setting" "$dest" qemu-img convert -O raw "$f" "$dest")
    read -r w_best w_med < <(measure "$setting" "$dest" qemu-img convert -W -O raw "$f" "$dest")
    read -r c_best c_med < <(measure "$setting" "$dest" cp "$img" "$dest")
    cmp -s "$img" "$dest" || { echo "MISMATCH: the dense export differs" >&2; exit 1; }
    printf 'dense, %-5s: qemu-img convert -O raw: best %s s, median %s s\n' "$setting" "$q_best" "$q_med"
    printf 'dense, %-5s: qemu-img convert -W -O raw: best %s s, median %s s\n' "$setting" "$w_best" "$w_med"
    printf 'dense, %-5s: cp through vmsnapfs: best %s s, median %s s\n' "$setting" "$c_best" "$c_med"
    printf 'dense, %-5s: ratio to qemu-img: best %s, median %s; to qemu-img -W: best %s, median %s\n' \
        "$setting" "$(ratio "$q_best" "$c_best")" "$(ratio "$q_med" "$c_med")" \
        "$(ratio "$w_best" "$c_best")" "$(ratio "$w_med" "$c_med")"
    if [ "$setting" != cold ]; then
        # the most any cp can do: the same image as a plain file in the
        # page cache (cp reads and writes on one thread; qemu-img overlaps
        # its reads and writes on several)
        cp "$img" "$shm/plain"
        read -r p_best p_med < <(measure "$setting" "$dest" cp "$shm/plain" "$dest")
        rm -f "$shm/plain"
        printf 'dense, %-5s: cp of a plain file in the page cache: best %s s, median %s s (ratio to qemu-img: best %s, median %s)\n' \
            "$setting" "$p_best" "$p_med" "$(ratio "$q_best" "$p_best")" "$(ratio "$q_med" "$p_med")"
    fi
done
rm -f "$shm/x"

img=$mnt/${prefix}sparse/volumes/vda.img
read -r q_best q_med < <(measure warm "$out/x" qemu-img convert -O raw "$work/sparse.qcow2" "$out/x")
read -r c_best c_med < <(measure warm "$out/x" cp "$img" "$out/x")
cmp -s "$img" "$out/x" || { echo "MISMATCH: the sparse export differs" >&2; exit 1; }
alloc=$(du -k "$out/x" | cut -f1)
echo "sparse 4 GiB, warm: qemu-img convert -O raw: best $q_best s, median $q_med s"
echo "sparse 4 GiB, warm: cp through vmsnapfs: best $c_best s, median $c_med s (the copy uses $alloc KiB)"

# incremental: after 1 % of the 2 GiB disk changed (320 writes of 64 KiB
# all over it), cp -r of snapshots/S/changes against cp of the full disk
rm -f "$out/x"
S=$mnt/${prefix}inc/snapshots
mkdir "$S/inc1"
top=$(virsh -c qemu:///system domblklist "${prefix}inc" | awk '$1 == "vda" { print $2 }')
head -c 20M /dev/urandom >"$work/r1"
cmds=()
for ((i = 0; i < 320; i++)); do
    cmds+=(-c "write -s $work/r1 $((i * 6553600 % (2047 << 20) / 65536 * 65536)) 64k")
done
qemu-io -f qcow2 "${cmds[@]}" "$top" >/dev/null
rm -f "$work/r1"
mkdir "$S/inc2"
sync
read -r f_best f_med < <(measure warm "$out/x" cp "$S/inc2/volumes/vda.img" "$out/x")
full_kib=$(du -k "$out/x" | cut -f1)
rm -rf "$out/x" "$out/changes"
inc_timed() { rm -rf "$out/changes"; cp -r "$S/inc2/changes" "$out/changes"; }
read -r i_best i_med < <(measure warm "$out/x" inc_timed)
inc_kib=$(du -k "$out/changes" | cut -f1)
echo "incremental, 1 % of 2 GiB changed: cp of the full disk && sync: best $f_best s, median $f_med s, $full_kib KiB"
echo "incremental, 1 % of 2 GiB changed: cp -r of changes/ && sync:  best $i_best s, median $i_med s, $inc_kib KiB"
awk -v f="$f_best" -v i="$i_best" -v fk="$full_kib" -v ik="$inc_kib" 'BEGIN {
    printf "incremental: %.1fx faster, %.1f %% of the bytes\n", f / i, 100 * ik / fk }'
rm -rf "$out/changes" "$out/x"
