#!/usr/bin/env bash
# bench/host-scale.sh [COUNT]: what COUNT (1000) other stopped domains on
# the host cost restore, clone and rmdir, which look at every domain and
# snapshot of the host (conflicts; which images build on a layer). One
# small stopped VM with a qcow2 disk; median of RUNS (3) each, and in the
# same run `virsh snapshot-create-as --disk-only` + `virsh snapshot-delete
# --metadata` (which look at no other domain) on the same VM as the peer.
# Target (issue 5): restore under 1 s. As root, libvirtd running.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000}
n=${RUNS:-3}
vmsnapfs=${VMSNAPFS:-build/fs/vmsnapfs}
prefix="vmsnapfs-bench-$$-"
work=$(mktemp -d /var/tmp/vmsnapfs-bench.XXXXXX)
chmod 0755 "$work"
export VMSNAPFS_STATE_DIR=$work/state
mnt=$work/mnt
mkdir -p "$mnt"
v="virsh -c qemu:///system"

cleanup() {
    grep -q " $mnt fuse.vmsnapfs " /proc/mounts && fusermount3 -u "$mnt"
    $v list --all --name | grep "^$prefix" | sed 's/^/undefine --snapshots-metadata /' |
        $v >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

truncate -s 16M "$work/disk.raw"
for ((i = 0; i < count; i++)); do
    cat >"$work/d$i.xml" <<XML
<domain type='qemu'><name>$prefix$i</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>
<driver name='qemu' type='raw'/><source file='$work/disk.raw'/><target dev='vda' bus='virtio'/>
</disk></devices></domain>
XML
    echo "define $work/d$i.xml"
done | $v >/dev/null
qemu-img create -q -f qcow2 "$work/t.qcow2" 64M
cat >"$work/t.xml" <<XML
<domain type='qemu'><name>${prefix}t</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>
<driver name='qemu' type='qcow2'/><source file='$work/t.qcow2'/><target dev='vda' bus='virtio'/>
</disk></devices></domain>
XML
$v define "$work/t.xml" >/dev/null
"$vmsnapfs" qemu:///system "$mnt"
T=$mnt/${prefix}t

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -a rs cl rm pc pd
mkdir "$T/snapshots/base"
for ((i = 0; i < n; i++)); do
    mkdir "$T/snapshots/s$i"
    sleep 1.1       # one safety snapshot name a second
    t0=$(ms_now); echo base >"$T/restore"; t1=$(ms_now); rs+=($((t1 - t0)))
    t0=$(ms_now); echo "${prefix}c$i" >"$T/snapshots/base/clone"; t1=$(ms_now); cl+=($((t1 - t0)))
    t0=$(ms_now); rmdir "$T/snapshots/s$i"; t1=$(ms_now); rm+=($((t1 - t0)))
    t0=$(ms_now)
    $v snapshot-create-as "${prefix}t" "p$i" --disk-only --atomic \
        --diskspec "vda,file=$work/t.p$i.qcow2" >/dev/null
    t1=$(ms_now); pc+=($((t1 - t0)))
    t0=$(ms_now); $v snapshot-delete "${prefix}t" "p$i" --metadata >/dev/null; t1=$(ms_now)
    pd+=($((t1 - t0)))
done
m() { printf '%s\n' "$@" | median; }
echo "host with $count other domains: restore median $(m "${rs[@]}") ms (all: ${rs[*]}); clone $(m "${cl[@]}") ms (all: ${cl[*]}); rmdir $(m "${rm[@]}") ms (all: ${rm[*]})"
echo "peers: virsh snapshot-create-as --disk-only $(m "${pc[@]}") ms (all: ${pc[*]}); virsh snapshot-delete --metadata $(m "${pd[@]}") ms (all: ${pd[*]})"
awk -v r="$(m "${rm[@]}")" -v d="$(m "${pd[@]}")" -v s="$(m "${rs[@]}")" -v c="$(m "${pc[@]}")" 'BEGIN {
    printf "ratio rmdir / virsh snapshot-delete --metadata: %.2f\n", r / d
    printf "ratio restore / virsh snapshot-create-as: %.2f\n", s / c }'
