#!/usr/bin/env bash
# kube-rotate.sh: vmsnap-rotate on a real mount (KubeVirt backend, the fake
# cluster): it takes its snapshots with mkdir and prunes with rmdir; while a
# volume of one of its snapshots is being copied (and the running VM's own
# disk too) a run still takes its snapshot, removes what it can, and reports
# the snapshot in use as busy (EBUSY), exit 0; the next run, after the copy,
# removes it; a snapshot not of its prefix is never touched; --dry-run
# changes nothing on the mount either.
. "${0%/*}/lib.sh"
requires_root
requires_fuse
[ -x "${KUBE_PROBE:-}" ] || skip "no kube-probe (built without the KubeVirt backend)"
requires kubectl
requires curl
: "${VMSNAP_ROTATE:=$srcdir/build/tools/vmsnap-rotate}"
[ -x "$VMSNAP_ROTATE" ] || fail "no vmsnap-rotate at $VMSNAP_ROTATE"
use_fake_cluster
wd=$(workdir)
mnt=$wd/mnt
mkdir -p "$mnt"
k() { kubectl --request-timeout=20s "$@"; }
data=$KUBE_DIR/data/prod
cat <<Y | k create -f - >/dev/null
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: larry-root, namespace: prod}
spec:
  storageClassName: fake
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: larry, namespace: prod}
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}]
      volumes:
      - {name: root, persistentVolumeClaim: {claimName: larry-root}}
Y
wait_until 10 test -s "$data/pvc-larry-root.img" || fail "the fake made no disk for larry"
start_vmsnapfs kubevirt:// "$mnt"
L=$mnt/prod/larry
wait_until 10 test -d "$L/snapshots" || fail "no $L/snapshots"
snaps() { ls "$L/snapshots" | tr '\n' ' '; }
rotate() { "$VMSNAP_ROTATE" "$L" --keep-last 2 "$@"; }

mkdir "$L/snapshots/manual" || fail "mkdir manual: $(tail -n 2 "$L/events")"
for t in 00 01; do
    out=$(rotate --now "2026-01-01T$t:00:00Z") || fail "run at $t:00: exit $?: $out"
    grep -qx "snapshot auto-20260101-${t}0000" <<<"$out" || fail "run at $t:00: $out"
done
[ "$(snaps)" = "auto-20260101-000000 auto-20260101-010000 manual " ] || fail "after 2 runs: $(snaps)"

# a dry run on the mount: nothing changes
out=$(rotate -n --now 2026-01-01T02:00:00Z) || fail "dry run: exit $?"
grep -qx "would remove auto-20260101-000000" <<<"$out" || fail "dry run: $out"
[ "$(snaps)" = "auto-20260101-000000 auto-20260101-010000 manual " ] || fail "after a dry run: $(snaps)"

# the oldest snapshot's volume is being copied, and the VM's own disk: the
# run takes its snapshot and reports the one in use as busy, exit 0
at_exit "exec 3<&- 4<&-"
exec 3<"$L/snapshots/auto-20260101-000000/volumes/root.img"
exec 4<"$L/volumes/root.img"
head -c 65536 <&3 >/dev/null || fail "reading the snapshot's volume"
head -c 65536 <&4 >/dev/null || fail "reading the VM's volume"
# the daemon logs the refused rmdir
expect_log "delete-snapshot 'auto-20260101-000000' failed: a volume of the snapshot is open"
status=0
out=$(rotate --now 2026-01-01T02:00:00Z 2>"$wd/err") || status=$?
[ "$status" = 0 ] || fail "a run while a volume is copied: exit $status: $out $(cat "$wd/err")"
[ ! -s "$wd/err" ] || fail "errors: $(cat "$wd/err")"
grep -qx "snapshot auto-20260101-020000" <<<"$out" || fail "no snapshot while copying: $out"
grep -q "^busy, kept: auto-20260101-000000 " <<<"$out" || fail "not reported busy: $out"
tail -n 1 <<<"$out" | grep -qx "vmsnap-rotate: $L: took auto-20260101-020000, kept 2, removed 0, busy 1" ||
    fail "summary: $out"
[ "$(snaps)" = "auto-20260101-000000 auto-20260101-010000 auto-20260101-020000 manual " ] ||
    fail "while copying: $(snaps)"
exec 3<&- 4<&-

# after the copy the next run removes it, and what the rules no longer keep
all=
for ((i = 0; i < 50; i++)); do
    out=$(rotate --now 2026-01-01T03:00:00Z) || fail "run after the copy: exit $?: $out"
    all+=$out$'\n'
    grep -q "busy 0$" <<<"$out" && break
    sleep 0.2     # in case the export lingers after the last close
done
out=$all
grep -qx "removed auto-20260101-000000" <<<"$out" || fail "after the copy: $out"
grep -qx "removed auto-20260101-010000" <<<"$out" || fail "after the copy: $out"
[ "$(snaps)" = "auto-20260101-020000 auto-20260101-030000 manual " ] || fail "at the end: $(snaps)"
echo "PASS: $testname"
