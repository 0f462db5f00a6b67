#!/usr/bin/env bash
# bench/list.sh [COUNT]: `ls -l` of a mount of a host with COUNT (1000)
# small stopped domains, cold and warm, against `virsh list --all` in the
# same run; prints the ratios and the daemon's RSS.
#
# Targets (issue 2): warm `ls -l` under 50 ms and faster than
# `virsh list --all`; RSS under 30 MiB. As root, with libvirtd running
# (tools/start-libvirt.sh) and a build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000}
prefix="vmsnapfs-bench-$$-"
vmsnapfs=${VMSNAPFS:-build/fs/vmsnapfs}
work=$(mktemp -d /var/tmp/vmsnapfs-bench.XXXXXX)
chmod 0755 "$work"
export VMSNAPFS_STATE_DIR=$work/state     # the daemon's records go with the run
mnt=$work/mnt
mkdir -p "$mnt"

cleanup() {
    grep -q " $mnt fuse.vmsnapfs " /proc/mounts && fusermount3 -u "$mnt"
    virsh -c qemu:///system list --all --name | grep "^$prefix" |
        sed 's/^/undefine /' | virsh -c qemu:///system >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# small stopped domains, each with one small raw disk, defined in one virsh
truncate -s 16M "$work/disk.raw"
for ((i = 0; i < count; i++)); do
    cat >"$work/d$i.xml" <<XML
<domain type='qemu'>
  <name>$prefix$i</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$work/disk.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
XML
    echo "define $work/d$i.xml"
done | virsh -c qemu:///system >/dev/null
echo "defined $count domains"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# median of the times (ms) of N runs of a command
median_ms() {
    local n=$1 t0 i
    shift
    for ((i = 0; i < n; i++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null
        echo $(( ($(date +%s%N) - t0) / 1000 ))
    done | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 1000 }'
}

"$vmsnapfs" qemu:///system "$mnt"
pid=$(pgrep -f "^$vmsnapfs qemu:///system $mnt\$")

cold=$(median_ms 1 ls -l "$mnt")       # a fresh mount: nothing cached
warm=$(median_ms 7 ls -l "$mnt")
entries=$(ls -l "$mnt" | grep -c "^d")
virsh_ms=$(median_ms 7 virsh -c qemu:///system list --all)
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")

echo "VM directories in ls -l:  $entries ($count defined for this run)"
echo "ls -l, cold (first):      $cold ms"
echo "ls -l, warm (median of 7): $warm ms"
echo "virsh list --all (median of 7): $virsh_ms ms"
awk -v w="$warm" -v v="$virsh_ms" -v c="$cold" 'BEGIN {
    printf "ratio warm ls -l / virsh list --all: %.2f\n", w / v
    printf "ratio cold ls -l / virsh list --all: %.2f\n", c / v
}'
echo "daemon RSS: $((rss_kib / 1024)) MiB ($rss_kib KiB)"
