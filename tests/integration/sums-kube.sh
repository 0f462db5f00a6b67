#!/usr/bin/env bash
# sums-kube.sh: snapshots/S/SHA256SUMS on the fake cluster. After `cp -r S`,
# `sha256sum -c SHA256SUMS` passes in the copy and fails on a copy with one
# byte flipped; the sums are the disk's as the snapshot has it (not what
# the guest wrote after); they are computed once, in the background after
# mkdir, and kept on the VirtualMachineSnapshot (annotation
# vmsnapfs.io/sha256sums): a second mount reads them without hashing; a
# snapshot made without sums (-o no_checksums: no file) gets them while cp
# -r reads its disk, which the export server then sends once, not twice;
# status.json shows how far they are; hashing never makes rmdir or mkdir
# EBUSY.
. "${0%/*}/lib.sh"
requires_root
requires_fuse
[ -x "${KUBE_PROBE:-}" ] || skip "no kube-probe (built without the KubeVirt backend)"
requires kubectl
requires curl
requires sha256sum
requires jq
use_fake_cluster
wd=$(workdir)
mnt=$wd/mnt
mnt2=$wd/mnt2
k() { kubectl --request-timeout=20s "$@"; }
data=$KUBE_DIR/data/prod
disk() { echo "$data/pvc-$1-root.img"; }
guest_write() {
    kube_api POST /fake/disk "{\"namespace\":\"prod\",\"pvc\":\"$1-root\",\"offset\":$2,\"data\":\"$(printf %s "$3" | base64 -w0)\"}" >/dev/null
}
export_bytes() { kube_api GET /fake/export-bytes | jq -r .bytes; }
annotation() {
    k -n prod get vmsnapshot "$1" -o jsonpath='{.metadata.annotations.vmsnapfs\.io/sha256sums}'
}
sums_state() { jq -r '.checksums.state // "none"' "$M/snapshots/$1/status.json" 2>/dev/null; }
# for wait_until, which runs a command again (its arguments are expanded once)
sums_are() { [ "$(sums_state "$1")" = "$2" ]; }
kept() { [ -n "$(annotation "$1")" ]; }
vm() {  # vm NAME RUNSTRATEGY
    cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1-root, namespace: prod}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $1, namespace: prod}
spec:
  runStrategy: $2
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: $1-root}}
Y
}
k create ns prod >/dev/null
vm moe Halted
wait_until 10 test -s "$(disk moe)" || fail "the fake made no disk for moe"
# 8 MiB of data the guest wrote (the body from a file, curl's @: too long for argv)
head -c $((8 << 20)) /dev/urandom >"$wd/random"
printf '{"namespace":"prod","pvc":"moe-root","offset":%d,"data":"%s"}' $((4 << 20)) \
    "$(base64 -w0 "$wd/random")" >"$wd/random.json"
kube_api POST /fake/disk "@$wd/random.json" >/dev/null || fail "cannot write the guest's data"
guest_write moe $((63 << 20)) "the last MiB, s0"
M=$mnt/prod/moe

# -- a mount without sums: no file, nothing kept ---------------------------
start_vmsnapfs kubevirt:// "$mnt" -o no_checksums
mkdir "$M/snapshots/s0" || fail "mkdir s0: $(tail -n 2 "$M/events")"
[ -e "$M/snapshots/s0/SHA256SUMS" ] && fail "SHA256SUMS with no_checksums"
ls "$M/snapshots/s0" | grep -q SHA256SUMS && fail "SHA256SUMS listed with no_checksums"
jq -e 'has("checksums") | not' "$M/snapshots/s0/status.json" >/dev/null ||
    fail "status.json speaks of checksums with no_checksums"
sha_s0=$(sha256sum <"$(disk moe)" | cut -d' ' -f1)
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "the first daemon failed"
[ -z "$(annotation s0)" ] || fail "no_checksums kept sums: $(annotation s0)"

# -- the sums of a new snapshot: in the background, kept ------------------
guest_write moe $((63 << 20)) "the last MiB, s1"
start_vmsnapfs kubevirt:// "$mnt"
mkdir "$M/snapshots/s1" || fail "mkdir s1: $(tail -n 2 "$M/events")"
sha_s1=$(sha256sum <"$(disk moe)" | cut -d' ' -f1)
guest_write moe $((63 << 20)) "after s1: not in it"
# the sums come with no reader at all; meanwhile status.json shows progress
jq -e '.progress.total == 67108864 or .checksums.state == "done"' \
    "$M/snapshots/s1/status.json" >/dev/null ||
    fail "no progress in status.json: $(cat "$M/snapshots/s1/status.json")"
wait_until 60 sums_are s1 done || fail "s1's sums: $(cat "$M/snapshots/s1/status.json")"
wait_until 20 kept s1 || fail "s1's sums are not kept on the VirtualMachineSnapshot"
stored() { jq -e '.checksums.stored == true' "$M/snapshots/$1/status.json" >/dev/null 2>&1; }
wait_until 20 stored s1 || fail "status.json: not stored: $(cat "$M/snapshots/s1/status.json")"
[ "$(cat "$M/snapshots/s1/SHA256SUMS")" = "$sha_s1  volumes/root.img" ] ||
    fail "SHA256SUMS of s1: $(cat "$M/snapshots/s1/SHA256SUMS") (the disk at s1: $sha_s1)"
[ "$(stat -c %s "$M/snapshots/s1/SHA256SUMS")" = "$(wc -c <"$M/snapshots/s1/SHA256SUMS")" ] ||
    fail "st_size of SHA256SUMS is not its length"
# cp -r, then sha256sum -c in the copy; a flipped byte fails it
mkdir "$wd/backup"
cp -r "$M/snapshots/s1" "$wd/backup/" || fail "cp -r s1"
(cd "$wd/backup/s1" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c of the copy of s1"
printf '\xff' | dd of="$wd/backup/s1/volumes/root.img" bs=1 seek=$((5 << 20)) conv=notrunc status=none
(cd "$wd/backup/s1" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1) &&
    fail "sha256sum -c passed on a copy with a flipped byte"

# -- a snapshot without sums: computed while cp -r reads its disk, once ---
[ "$(sums_state s0)" = queued ] || fail "s0 is not waiting: $(sums_state s0)"
# what a copy costs the export server without hashing (s1's sums are known;
# the view's streamed reads may send a little ahead of what cp takes)
before=$(export_bytes)
cp "$M/snapshots/s1/volumes/root.img" "$wd/plain.img" || fail "cp of s1's disk"
plain=$(( $(export_bytes) - before ))
before=$(export_bytes)
cp -r "$M/snapshots/s0" "$wd/backup/" || fail "cp -r s0"
after=$(export_bytes)
sent=$((after - before))
echo "export bytes: cp of a disk with known sums $plain; cp -r of s0 (no sums yet) $sent"
[ "$sent" -ge $((64 << 20)) ] || fail "the disk was not read? $sent bytes"
[ "$sent" -lt $((plain + (16 << 20))) ] ||
    fail "the disk was read twice for cp -r and its sums: $sent bytes (a plain copy: $plain)"
[ "$(cat "$wd/backup/s0/SHA256SUMS")" = "$sha_s0  volumes/root.img" ] ||
    fail "SHA256SUMS of s0: $(cat "$wd/backup/s0/SHA256SUMS") (the disk at s0: $sha_s0)"
(cd "$wd/backup/s0" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c of the copy of s0"
wait_until 20 kept s0 || fail "s0's sums were not kept"

# -- a second mount reads them as kept: no hashing, no export ------------
before=$(export_bytes)
start_vmsnapfs kubevirt:// "$mnt2"
log2=$VMSNAPFS_LOG
[ "$(cat "$mnt2/prod/moe/snapshots/s1/SHA256SUMS")" = "$sha_s1  volumes/root.img" ] ||
    fail "the second mount's SHA256SUMS of s1"
[ "$(cat "$mnt2/prod/moe/snapshots/s0/SHA256SUMS")" = "$sha_s0  volumes/root.img" ] ||
    fail "the second mount's SHA256SUMS of s0"
jq -e '.checksums.state == "done" and .checksums.stored == true' \
    "$mnt2/prod/moe/snapshots/s1/status.json" >/dev/null || fail "the second mount's status.json"
[ "$(export_bytes)" = "$before" ] || fail "the second mount read disks: $(( $(export_bytes) - before )) bytes"
grep -q "SHA256SUMS ready" "$log2" && fail "the second mount hashed: $(grep 'SHA256SUMS ready' "$log2")"

# -- hashing is no open volume: rmdir and mkdir go on ---------------------
mkdir "$M/snapshots/s2" || fail "mkdir s2: $(tail -n 2 "$M/events")"
rmdir "$M/snapshots/s2" || fail "rmdir of a snapshot being hashed: $(tail -n 2 "$M/events")"
mkdir "$M/snapshots/s3" || fail "mkdir s3: $(tail -n 2 "$M/events")"
mkdir "$M/snapshots/s4" || fail "mkdir while s3 is hashed: $(tail -n 2 "$M/events")"
rmdir "$M/snapshots/s3" || fail "rmdir s3 while hashed: $(tail -n 2 "$M/events")"
wait_until 60 sums_are s4 done || fail "s4's sums: $(cat "$M/snapshots/s4/status.json")"
(cd "$M/snapshots/s4" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c in the mount (s4)"
# -- the API server restarts while the sums are computed: they come all the same
mkdir "$M/snapshots/s5" || fail "mkdir s5: $(tail -n 2 "$M/events")"
sha_s5=$(sha256sum <"$(disk moe)" | cut -d' ' -f1)
kube_api POST /fake/outage '{"seconds":4}' >/dev/null
[ "$(timeout 120 cat "$M/snapshots/s5/SHA256SUMS")" = "$sha_s5  volumes/root.img" ] ||
    fail "SHA256SUMS of s5 across an outage: $(cat "$M/snapshots/s5/status.json")"
# the outage as the log tells it: watches listed again, the export's
# creation refused once (the sums then try again)
expect_log "the watch of .* failed|cannot list .*: .*trying again"
expect_log "volume 'root' of snapshot s5: .*(Empty reply|Couldn't connect|timed out)"
grep -q "'prod/moe/s5': SHA256SUMS: .*trying again" "$VMSNAPFS_LOG" ||
    echo "(the outage ended before the sums needed the API server)"
echo "PASS: $testname"
