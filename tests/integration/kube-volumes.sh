#!/usr/bin/env bash
# kube-volumes.sh: KubeVirt disks as raw files, read through
# VirtualMachineExports of the fake cluster (its export controller and
# export server: Range, the token header): a stopped VM's disk and a
# snapshot's are byte-exact copies of the fake's backing files; a marker
# written before a snapshot is in its image and one written after is not;
# the export goes after the last close; a VM started while its disk is
# read fails the reads (EIO), never serves torn data; rmdir of a snapshot
# being read is EBUSY; a running VM's disk is read from one temporary
# snapshot per VM (one point in time while the guest writes on, shared by
# parallel and successive copies, hidden from snapshots/, gone after the
# last close and its linger, no obstacle to mkdir, unchanged when the VM
# stops; crash-consistent without an agent; a failing one fails the open);
# a killed daemon's export and temporary snapshot are deleted by the next
# one; no token in the log.
. "${0%/*}/lib.sh"
requires_root
requires_fuse
[ -x "${KUBE_PROBE:-}" ] || skip "no kube-probe (built without the KubeVirt backend)"
requires kubectl
requires curl
use_fake_cluster
wd=$(workdir)
mnt=$wd/mnt
mkdir -p "$mnt"
k() { kubectl --request-timeout=20s "$@"; }
data=$KUBE_DIR/data/prod
disk() { echo "$data/pvc-$1-root.img"; }
# guest_write VM OFFSET TEXT: the guest writes into its disk (the fake's /fake/disk)
guest_write() {
    kube_api POST /fake/disk "{\"namespace\":\"prod\",\"pvc\":\"$1-root\",\"offset\":$2,\"data\":\"$(printf %s "$3" | base64 -w0)\"}" >/dev/null
}
# exports VM: how many exports of VM's disks (its own, or its snapshots')
exports() { k -n prod get vmexport -o name 2>/dev/null | grep -c -- "-$1\$" || true; }
# temps [VM]: the temporary snapshots (of VM's); all_exports: every export
temps() {
    local l
    l=$(k -n prod get vmsnapshot -l vmsnapfs.io/temporary -o name 2>/dev/null) || l=
    grep -c -- "/vmsnapfs-live-${1:-}" <<<"$l" || true
}
all_exports() {
    local l
    l=$(k -n prod get vmexport -o name 2>/dev/null) || l=
    grep -c . <<<"$l" || true
}
# temp_vs VM: the file of the VolumeSnapshot of VM's temporary snapshot
temp_vs() {
    local uid
    uid=$(k -n prod get vmsnapshot -l vmsnapfs.io/temporary -o \
        jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}' |
        awk -v p="vmsnapfs-live-$1-" 'index($1, p) == 1 { print $2 }')
    [ -n "$uid" ] && [ "$(wc -w <<<"$uid")" = 1 ] || return 1
    echo "$data/vs-vmsnapshot-$uid-volume-root.img"
}
vm() {  # vm NAME RUNSTRATEGY [ANNOTATIONS]
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
metadata: {name: $1, namespace: prod, annotations: {${3:-}}}
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
vm larry Always
wait_until 10 test -s "$(disk moe)" || fail "the fake made no disk for moe"
wait_until 10 test -s "$(disk larry)" || fail "the fake made no disk for larry"
guest_write moe $((1 << 20)) "moe was here"
guest_write moe $((63 << 20)) "the last MiB"
start_vmsnapfs kubevirt:// "$mnt"
M=$mnt/prod/moe
L=$mnt/prod/larry

# a stopped VM's disk: its size, every byte of it
[ "$(stat -c %s "$M/volumes/root.img")" = $((64 << 20)) ] ||
    fail "size: $(stat -c %s "$M/volumes/root.img")"
# the export server knows no holes: st_blocks does not claim any
[ "$(( $(stat -c %b "$M/volumes/root.img") * 512 ))" -ge $((64 << 20)) ] ||
    fail "st_blocks claims holes: $(stat -c %b "$M/volumes/root.img")"
cp "$M/volumes/root.img" "$wd/moe.img" || fail "cp of a stopped VM's disk: $(tail -n 2 "$M/events")"
cmp "$wd/moe.img" "$(disk moe)" || fail "the copy differs from the disk"
[ "$(exports moe)" = 1 ] || fail "exports while copying: $(exports moe)"
# cp --sparse=always makes the copy sparse (the documented way)
cp --sparse=always "$M/volumes/root.img" "$wd/moe-sparse.img"
cmp "$wd/moe-sparse.img" "$(disk moe)" || fail "the sparse copy differs"
# a reader that jumps (dd skip=, a partition table, then a filesystem):
# a read just past the stream's readahead window, one behind it, one in
# it, each the disk's bytes (and no reader waits for a stream that waits
# for it)
timeout -k 5 30 python3 - "$M/volumes/root.img" "$(disk moe)" <<'PY' || fail "reads that jump"
import os, sys, time
f, d = os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_RDONLY)
MiB = 1 << 20
for off in (0, None, 36 * MiB, 10 * MiB, 63 * MiB, 20 * MiB, 1 * MiB):
    if off is None:
        time.sleep(1)           # the stream runs ahead and waits
        continue
    a, b = os.pread(f, MiB, off), os.pread(d, MiB, off)
    if a != b:
        raise SystemExit("bytes at %d MiB differ" % (off // MiB))
PY
[ "$(du -k "$wd/moe-sparse.img" | cut -f1)" -lt 1024 ] ||
    fail "cp --sparse=always did not make holes: $(du -k "$wd/moe-sparse.img")"
# the export goes once no reader is left (10 s linger)
wait_until 20 eval '[ "$(exports moe)" = 0 ]' || fail "the export stays after the last close"

# a snapshot of the running VM: the marker written before is in its image,
# the one written after is not
guest_write larry $((2 << 20)) "before the snapshot"
mkdir "$L/snapshots/s1" || fail "mkdir s1: $(tail -n 2 "$L/events")"
guest_write larry $((2 << 20)) "after the snapshot!"
[ "$(stat -c %s "$L/snapshots/s1/volumes/root.img")" = $((64 << 20)) ] || fail "snapshot volume size"
cp "$L/snapshots/s1/volumes/root.img" "$wd/s1.img" ||
    fail "cp of a snapshot's disk: $(tail -n 2 "$L/events")"
[ "$(dd if="$wd/s1.img" bs=1 skip=$((2 << 20)) count=19 2>/dev/null)" = "before the snapshot" ] ||
    fail "the snapshot's image lacks what was written before it"
vs=$(ls "$data" | grep '^vs-.*-volume-root.img$')
cmp "$wd/s1.img" "$data/$vs" || fail "the snapshot's copy differs from its VolumeSnapshot"

# rmdir of a snapshot while its disk is read: EBUSY
exec 3<"$L/snapshots/s1/volumes/root.img"
expect_errno EBUSY rmdir "$L/snapshots/s1"
expect_log "delete-snapshot 's1' failed: a volume of the snapshot is open"
exec 3<&-
rmdir "$L/snapshots/s1" || fail "rmdir after the copy: $(tail -n 2 "$L/events")"

# ---- a running VM's disk: read from a temporary snapshot of the VM ----
[ "$(stat -c %s "$L/volumes/root.img")" = $((64 << 20)) ] ||
    fail "size of a running VM's disk: $(stat -c %s "$L/volumes/root.img")"
[ "$(temps)" = 0 ] || fail "a temporary snapshot before any open"
# One point in time while the guest writes on: a writer writes marker N at
# offset f(N), one after the other (each done before the next begins);
# some before the open, more while it makes the snapshot, and one more
# after each MiB read. The fake cuts a VolumeSnapshot under the disk's
# lock, so a consistent copy holds exactly markers 0..K-1 for some K, with
# every marker done before open() began (K >= before) and none begun after
# open() returned (K <= opened, the cut is before the open returns); a
# torn one (the live disk read as it changes) holds later markers at
# offsets past the reader. And it is the snapshot's VolumeSnapshot, byte
# for byte.
KUBE_URL=$KUBE_URL KUBE_DIR=$KUBE_DIR python3 - "$L" "$wd/live.img" <<'PY' ||
import base64, json, os, ssl, sys, threading, urllib.request
vm_dir, out = sys.argv[1], sys.argv[2]
kdir = os.environ["KUBE_DIR"]
ctx = ssl.create_default_context(cafile=kdir + "/ca.crt")
token = open(kdir + "/token").read().strip()
MiB = 1 << 20

def offset(n):          # distinct for every n, spread over the disk, past 4 KiB
    return ((n * 37) % 63) * MiB + 4096 + (n // 63) * 64

def marker(n):
    return b"marker %08d\n" % n

def write(n):
    body = json.dumps({"namespace": "prod", "pvc": "larry-root", "offset": offset(n),
                       "data": base64.b64encode(marker(n)).decode()}).encode()
    rq = urllib.request.Request(os.environ["KUBE_URL"] + "/fake/disk", data=body,
                                method="POST", headers={"Authorization": "Bearer " + token,
                                                        "Content-Type": "application/json"})
    urllib.request.urlopen(rq, context=ctx, timeout=20).read()

cv = threading.Condition()
state = {"started": 0, "done": 0, "stop": False, "error": None}

def writer():
    n = 0
    while True:
        with cv:
            if state["stop"]:
                return
            state["started"] = n + 1
        try:
            write(n)
        except Exception as e:
            with cv:
                state["error"] = repr(e)
                state["stop"] = True
                cv.notify_all()
            return
        with cv:
            state["done"] = n + 1
            cv.notify_all()
        n += 1

def wait_done(k):
    with cv:
        while state["done"] < k and not state["error"]:
            cv.wait()
        if state["error"]:
            raise SystemExit("the guest's writes failed: " + state["error"])

t = threading.Thread(target=writer)
t.start()
try:
    wait_done(5)
    with cv:
        before = state["done"]
    fd = os.open(vm_dir + "/volumes/root.img", os.O_RDONLY)
    with cv:
        opened = state["started"]
    hidden = [s for s in os.listdir(vm_dir + "/snapshots") if "live" in s]
    if hidden:
        raise SystemExit("snapshots/ shows the temporary snapshot: %s" % hidden)
    size = os.fstat(fd).st_size
    data = bytearray()
    while len(data) < size:
        chunk = os.pread(fd, min(MiB, size - len(data)), len(data))
        if not chunk:
            raise SystemExit("short read at %d" % len(data))
        data += chunk
        with cv:
            k = state["done"] + 1
        wait_done(k)                    # the guest writes on while it is read
    os.close(fd)
finally:
    with cv:
        state["stop"] = True
    t.join()
total = state["done"]
present = [bytes(data[offset(n):offset(n) + 16]) == marker(n) for n in range(total)]
K = present.index(False) if False in present else total
if any(present[K:]):
    raise SystemExit("torn: markers %s are in the copy but %d is not" %
                     ([n for n in range(K, total) if present[n]][:5], K))
if not before <= K <= opened:
    raise SystemExit("the copy holds markers 0..%d: not those of the open (%d..%d)" %
                     (K - 1, before, opened))
if total - opened < 32:
    raise SystemExit("only %d markers written while the copy was read" % (total - opened))
open(out, "wb").write(data)
print("live copy: markers 0..%d of %d (%d before the open, %d begun by its return)" %
      (K - 1, total, before, opened))
PY
    fail "the live copy is not one point in time (above)"
vs=$(temp_vs larry) || fail "no single temporary snapshot of larry: $(k -n prod get vmsnapshot)"
cmp "$wd/live.img" "$vs" || fail "the live copy differs from its temporary snapshot's cut"
cmp -s "$wd/live.img" "$(disk larry)" && fail "the guest's writes during the copy did not happen"
grep -q "'prod/larry': its disks are read from temporary snapshot 'vmsnapfs-live-larry-" \
    "$VMSNAPFS_LOG" || fail "no temporary snapshot in the log"
# the last close: after its linger (10 s) neither snapshot nor export is left
wait_until 25 eval '[ "$(temps)" = 0 ] && [ "$(all_exports)" = 0 ]' ||
    fail "left after the last close: $(k -n prod get vmsnapshot,vmexport -o name)"

# two parallel copies, and one more right after: one temporary snapshot
cp "$L/volumes/root.img" "$wd/p1.img" &
p1=$!
cp "$L/volumes/root.img" "$wd/p2.img" &
p2=$!
wait "$p1" || fail "cp 1 of the running disk: $(tail -n 2 "$L/events")"
wait "$p2" || fail "cp 2 of the running disk: $(tail -n 2 "$L/events")"
first=$(k -n prod get vmsnapshot -l vmsnapfs.io/temporary -o name)
[ "$(temps larry)" = 1 ] || fail "parallel copies made $(temps larry) temporary snapshots"
guest_write larry $((5 << 20)) "after the parallel copies"
cp "$L/volumes/root.img" "$wd/p3.img" || fail "cp 3 of the running disk"
[ "$(k -n prod get vmsnapshot -l vmsnapfs.io/temporary -o name)" = "$first" ] ||
    fail "a copy within the linger made another temporary snapshot"
vs=$(temp_vs larry) || fail "no single temporary snapshot of larry"
for f in p1 p2 p3; do
    cmp "$wd/$f.img" "$vs" || fail "$f differs from the temporary snapshot's cut"
done

# mkdir and rmdir of a user's snapshot while a live copy is open; the VM
# stopping and starting changes nothing in what it reads, and a copy made
# while it is stopped reads the same snapshot (one page cache per file)
exec 3<"$L/volumes/root.img"
head -c 4096 <&3 >/dev/null
mkdir "$L/snapshots/s2" || fail "mkdir during a live copy: $(tail -n 2 "$L/events")"
expect_content "$L/snapshots/s2/phase" Succeeded
listing=$(ls "$L/snapshots")
[ "$listing" = s2 ] || fail "snapshots/ during a live copy: $listing"
rmdir "$L/snapshots/s2" || fail "rmdir during a live copy: $(tail -n 2 "$L/events")"
k -n prod patch vm larry --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null
wait_until 10 grep -qx Stopped "$L/state" || fail "larry did not stop"
guest_write larry $((6 << 20)) "written while stopped"
cp "$L/volumes/root.img" "$wd/p4.img" || fail "cp of the stopped VM's disk during a live copy"
k -n prod patch vm larry --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
wait_until 10 grep -qx Running "$L/state" || fail "larry did not start"
cat <&3 >"$wd/p5.img" || fail "reading on after the VM stopped and started"
exec 3<&-
cmp "$wd/p4.img" "$vs" || fail "a copy while stopped differs from the shared snapshot"
cmp <(head -c 4096 "$vs"; cat "$wd/p5.img") "$vs" ||
    fail "the open copy changed as the VM stopped and started"
wait_until 25 eval '[ "$(temps)" = 0 ] && [ "$(all_exports)" = 0 ]' ||
    fail "left after the last close: $(k -n prod get vmsnapshot,vmexport -o name)"

# an open while a user's mkdir runs on the VM waits for it (KubeVirt takes
# one snapshot of a VM at a time), then makes its own
k -n prod annotate vm larry fake.vmsnapfs.io/ready-delay=3 >/dev/null
mkdir "$L/snapshots/s3" &
pm=$!
wait_until 10 eval 'k -n prod get vmsnapshot s3 >/dev/null' || fail "mkdir s3 made no snapshot"
cp "$L/volumes/root.img" "$wd/p6.img" || fail "a copy during a mkdir: $(tail -n 2 "$L/events")"
wait "$pm" || fail "mkdir s3 before a copy: $(tail -n 2 "$L/events")"
cmp "$wd/p6.img" "$(temp_vs larry)" || fail "the copy differs from its snapshot's cut"
rmdir "$L/snapshots/s3" || fail "rmdir s3: $(tail -n 2 "$L/events")"
k -n prod annotate vm larry fake.vmsnapfs.io/ready-delay- >/dev/null

# the VM starts while its disk is read: reads fail, never torn data
exec 3<"$M/volumes/root.img"
head -c 4096 <&3 >/dev/null
k -n prod patch vm moe --type merge -p '{"spec":{"runStrategy":"Always"}}' >/dev/null
wait_until 5 grep -qx Running "$M/state" || fail "moe did not start"
python3 - <<'PY' || fail "a read after the VM started did not fail with EIO"
import errno, os, time
deadline = time.monotonic() + 5
while True:
    try:
        os.pread(3, 1 << 16, 40 << 20)
    except OSError as e:
        raise SystemExit(0 if e.errno == errno.EIO else "errno %d" % e.errno)
    if time.monotonic() > deadline:
        raise SystemExit("reads go on while the VM runs")
    time.sleep(0.2)
PY
{ exec 3<&-; } 2>/dev/null || true     # close(2) fails too: the disk changed
grep -q "read-volume root failed the VM was started" "$M/events" ||
    fail "no reason in events: $(tail -n 2 "$M/events")"
expect_log "reading"
expect_log "'prod/moe': read-volume 'root' failed"
k -n prod patch vm moe --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null
wait_until 5 grep -qx Stopped "$M/state" || fail "moe did not stop"

# SIGKILL with disks open, a stopped VM's and a running one's: the next
# daemon deletes the exports and the temporary snapshot it left
exec 3<"$M/volumes/root.img"
head -c 4096 <&3 >/dev/null
exec 4<"$L/volumes/root.img"
head -c 4096 <&4 >/dev/null
[ "$(exports moe)" = 1 ] || fail "no export behind the open disk: $(k get vmexport -A)"
[ "$(temps larry)" = 1 ] || fail "no temporary snapshot behind the open running disk"
kill -KILL "$VMSNAPFS_PID"
wait "$VMSNAPFS_PID" 2>/dev/null || true
exec 3<&- 4<&-
fusermount3 -uz "$mnt"
[ "$(temps larry)" = 1 ] || fail "the killed daemon's temporary snapshot went by itself"
# consistency=required is for mkdir: live copies stay possible
start_vmsnapfs kubevirt:// "$mnt" -o consistency=required,failure_deadline=4s
expect_log "of a vmsnapfs that was killed: deleted"
[ "$(exports moe)" = 0 ] || fail "the killed daemon's export stays: $(k get vmexport -A)"
wait_until 10 eval '[ "$(temps)" = 0 ] && [ "$(all_exports)" = 0 ]' ||
    fail "the killed daemon's snapshot stays: $(k -n prod get vmsnapshot,vmexport -o name)"

# a running VM whose freeze fails: the open fails at the failure deadline,
# nothing left behind, the guest not frozen; one without a guest agent: a
# crash-consistent copy, said in the log; the unmount deletes its
# temporary snapshot, lingering after the copy
vm curly Always '"fake.vmsnapfs.io/agent": absent'
vm shemp Always '"fake.vmsnapfs.io/freeze": fail'
wait_until 10 grep -qx Running "$mnt/prod/curly/state" || fail "curly did not start"
wait_until 10 grep -qx Running "$mnt/prod/shemp/state" || fail "shemp did not start"
expect_errno ETIMEDOUT read "$mnt/prod/shemp/volumes/root.img"
expect_log "'prod/shemp': volume 'root': its temporary snapshot 'vmsnapfs-live-shemp-[0-9a-f]*' \
failed: the failure deadline passed: .*Freeze failed"
expect_log "'prod/shemp': open-volume 'root' failed"
wait_until 10 eval '[ "$(temps shemp)" = 0 ]' || fail "the failed temporary snapshot stays"
guests=$(kube_api GET /fake/guests)
frozen=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["prod/shemp"]["frozen"])' \
    "$guests") || fail "no guest shemp: $guests"
[ "$frozen" = False ] || fail "shemp is left frozen: $guests"
cp "$mnt/prod/curly/volumes/root.img" "$wd/curly.img" ||
    fail "cp of a running VM without agent: $(tail -n 2 "$mnt/prod/curly/events")"
cmp "$wd/curly.img" "$(temp_vs curly)" || fail "curly's copy differs from its snapshot's cut"
grep -q "'prod/curly': .*crash-consistent: no guest agent connected" "$VMSNAPFS_LOG" ||
    fail "the crash-consistent copy is not said in the log"
fusermount3 -u "$mnt" || fail "unmount"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exited with an error"
wait_until 5 eval '[ "$(temps)" = 0 ] && [ "$(all_exports)" = 0 ]' ||
    fail "left after the unmount: $(k -n prod get vmsnapshot,vmexport -o name)"

# export_link=internal from outside the cluster: the export's Service
# name does not resolve here; the read fails with that reason (EIO)
start_vmsnapfs kubevirt:// "$mnt" -o export_link=internal
expect_errno EIO read "$M/volumes/root.img"
expect_log "Could not resolve host: virt-export-"
expect_log "'prod/moe': open-volume 'root' failed"
grep -q "Could not resolve host: virt-export-vmsnapfs-vm-[0-9a-f]*-moe.prod.svc" "$VMSNAPFS_LOG" ||
    fail "no reason for the internal link: $(tail -n 3 "$VMSNAPFS_LOG")"

# no token of any kind in the log
for t in "$(cat "$KUBE_DIR/token")"; do
    grep -rqs -- "$t" "${VMSNAPFS_LOG%-*}"-*.log && fail "the API token shows in the log"
done
if grep -qi "x-kubevirt-export-token: [A-Za-z0-9]" "${VMSNAPFS_LOG%-*}"-*.log; then
    fail "an export token shows in the log"
fi
echo "PASS: $testname"
