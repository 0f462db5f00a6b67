#!/usr/bin/env bash
# restore-guest.sh: `echo S > VM/restore` on a real guest. Marker one,
# snapshot, marker two; FailImmediate gives EBUSY on the running VM,
# WaitGracePeriod ETIMEDOUT, an unknown snapshot ENOENT, a bad line EINVAL;
# DryRun changes nothing and lists the conflict (another VM uses the
# snapshot's layer), Strict refuses it (EBUSY), BestEffort gives up a MAC
# address another VM has; WaitEventually waits for the VM to stop;
# StopTarget restores: the
# guest runs again and sees one; the pre-restore snapshot brings two back;
# the older snapshot never changes; rmdir of snapshots a restored VM builds
# on keeps its data; qemu-img check is clean on every image.
. "${0%/*}/lib.sh"
requires_fuse
requires debugfs
requires e2fsck
use_guests

v=${TEST_PREFIX}r
other=${TEST_PREFIX}other
guest_make_disk "$GUEST_DIR/r.qcow2" 128M qcow2
guest_define "$v" --disk "$GUEST_DIR/r.qcow2:qcow2" --nic 52:54:00:5a:00:01
guest_start "$v"
guest_wait_agent "$v"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
V=$mnt/$v
out=$(workdir)/out
mkdir -p "$out"

marker() { guest_exec "$v" 'cat /data/marker' | tr -d '\r\n'; }
snapshot_marker() {     # the marker in snapshot $1's exported volume
    cp "$V/snapshots/$1/volumes/vda.img" "$out/$1.raw"
    e2fsck -fn "$out/$1.raw" >"$out/fsck.log" 2>&1 || fail "e2fsck of $1: $(cat "$out/fsck.log")"
    debugfs -R 'cat /marker' "$out/$1.raw" 2>/dev/null
    rm -f "$out/$1.raw"
}
field() { sed -n "s/^$1: //p" "$V/restore"; }

guest_exec "$v" 'echo one >/data/marker && sync' || fail "marker one"
mkdir "$V/snapshots/s1"
guest_exec "$v" 'echo two >/data/marker && sync' || fail "marker two"
[ -z "$(cat "$V/restore")" ] || fail "restore status before any restore: $(cat "$V/restore")"

# the errnos; nothing changes
expect_errno EBUSY write "$V/restore" "s1"
[ "$(field phase)" = Failed ] || fail "phase after EBUSY: $(cat "$V/restore")"
field error | grep -q FailImmediate || fail "no reason: $(cat "$V/restore")"
expect_errno ETIMEDOUT write "$V/restore" "s1 policy=WaitGracePeriod:1s"
expect_errno ENOENT write "$V/restore" "nosuch policy=StopTarget"
expect_errno EINVAL write "$V/restore" "s1 policy=Sometimes"
expect_errno EINVAL write "$V/restore" "s1 mode"
expect_log "'$v': restore .* failed: "
grep -q "restore s1 failed the VM is running and policy=FailImmediate" "$V/events" ||
    fail "no reason in events: $(cat "$V/events")"
[ "$(guest_state "$v")" = running ] || fail "the VM stopped"

# a conflict: another VM's disk is the snapshot's layer
guest_define "$other" --disk "$GUEST_DIR/r.qcow2:qcow2" --nic 52:54:00:5a:00:01
echo 's1 mode=DryRun policy=StopTarget' >"$V/restore" || fail "DryRun failed"
[ "$(field mode)" = DryRun ] || fail "mode: $(cat "$V/restore")"
[ "$(field phase)" = Succeeded ] || fail "DryRun phase: $(cat "$V/restore")"
grep -q "^conflict: disk vda: .*is a disk of VM '$other'" "$V/restore" ||
    fail "DryRun does not list the disk conflict: $(cat "$V/restore")"
grep -q "^conflict: interface 52:54:00:5a:00:01: .*VM '$other'" "$V/restore" ||
    fail "DryRun does not list the MAC conflict: $(cat "$V/restore")"
[ "$(guest_state "$v")" = running ] || fail "DryRun stopped the VM"
[ "$(ls "$V/snapshots")" = s1 ] || fail "DryRun made a snapshot: $(ls "$V/snapshots")"
[ "$(marker)" = two ] || fail "DryRun changed the disk"
expect_errno EBUSY write "$V/restore" "s1 policy=StopTarget"
[ "$(guest_state "$v")" = running ] || fail "a refused restore stopped the VM"
[ "$(ls "$V/snapshots")" = s1 ] || fail "a refused restore made a snapshot"
guest_undefine "$other"

# StopTarget: stop, restore, start again
inactive_before=$(guest_virsh dumpxml --inactive "$v")
echo 's1 policy=StopTarget' >"$V/restore" || fail "restore failed: $(cat "$V/restore")"
[ "$(field phase)" = Succeeded ] || fail "phase: $(cat "$V/restore")"
[ "$(field snapshot)" = s1 ] || fail "snapshot: $(cat "$V/restore")"
[ "$(field mode)" = Strict ] || fail "mode: $(cat "$V/restore")"
[ -n "$(field started)" ] && [ -n "$(field finished)" ] || fail "times: $(cat "$V/restore")"
[ -z "$(field error)" ] || fail "error: $(cat "$V/restore")"
# progress: the bytes of the disks restored, of all (the one 128M disk)
[ "$(field progress)" = "$((128 << 20))/$((128 << 20))" ] || fail "progress: $(cat "$V/restore")"
! grep -q '^conflict:' "$V/restore" || fail "conflicts: $(cat "$V/restore")"
[ "$(guest_state "$v")" = running ] || fail "the VM was not started again"
guest_wait_agent "$v"
[ "$(marker)" = one ] || fail "after the restore the guest sees '$(marker)', not one"
pre=$(ls "$V/snapshots" | grep '^pre-restore-s1-[0-9]\{8\}-[0-9]\{6\}$') ||
    fail "no safety snapshot: $(ls "$V/snapshots")"
[ "$(guest_virsh domuuid "$v")" = "$(sed -n 's:.*<uuid>\(.*\)</uuid>.*:\1:p' <<<"$inactive_before")" ] ||
    fail "the UUID changed"
grep -q '52:54:00:5a:00:01' "$V/domain.xml" || fail "the MAC changed"
grep -q "<vmsnapfs:restore .*snapshot=.s1." "$V/domain.xml" ||
    fail "the definition does not say it was restored: $(grep -A3 '<metadata' "$V/domain.xml")"
[ "$(snapshot_marker s1)" = one ] || fail "snapshot s1 changed"
[ "$(snapshot_marker "$pre")" = two ] || fail "the safety snapshot does not hold two"
expect_images_clean "$GUEST_DIR"

# the restore is undone by restoring the safety snapshot
guest_exec "$v" 'echo three >/data/marker && sync' || fail "marker three"
echo "$pre policy=StopTarget" >"$V/restore" || fail "restore of $pre: $(cat "$V/restore")"
guest_wait_agent "$v"
[ "$(marker)" = two ] || fail "restoring $pre gives '$(marker)', not two"
[ "$(snapshot_marker s1)" = one ] || fail "snapshot s1 changed"
expect_images_clean "$GUEST_DIR"

# a stopped VM: restored without a policy, left stopped
guest_shutdown "$v"
wait_until 5 grep -qx "shut off" "$V/state" || fail "state is not shut off"
echo s1 >"$V/restore" || fail "restore of a stopped VM: $(cat "$V/restore")"
[ "$(guest_state "$v")" = "shut off" ] || fail "a stopped VM was started"
# twice within a second: each keeps its own safety snapshot
before=$(ls "$V/snapshots" | grep -c '^pre-restore-s1-')
echo s1 >"$V/restore" || fail "a second restore at once: $(cat "$V/restore")"
[ "$(ls "$V/snapshots" | grep -c '^pre-restore-s1-')" = $((before + 1)) ] ||
    fail "no second safety snapshot: $(ls "$V/snapshots")"
# a snapshot named as safety snapshots once were (upper case; here made by
# virsh): listed, restored, and the safety snapshot of that restore has a
# valid name, cut to 63 characters
old=pre-restore-s1-20261122T065715Z
guest_virsh snapshot-create-as "$v" --name "$old" --disk-only --atomic >/dev/null ||
    fail "virsh snapshot $old"
wait_until 5 test -d "$V/snapshots/$old" || fail "the old-style name is not listed: $(ls "$V/snapshots")"
echo "$old" >"$V/restore" || fail "restore of $old: $(cat "$V/restore")"
[ "$(field phase)" = Succeeded ] || fail "restore of $old: $(cat "$V/restore")"
ls "$V/snapshots" | grep -q '^pre-restore-pre-restore-s1-20261122t065715z-[0-9]\{8\}-[0-9]\{6\}$' ||
    fail "no valid safety snapshot name for $old: $(ls "$V/snapshots")"
long=$(printf 's%.0s' {1..60})
mkdir "$V/snapshots/$long" || fail "mkdir $long"
echo "$long" >"$V/restore" || fail "restore of $long: $(cat "$V/restore")"
pre_long=$(ls "$V/snapshots" | grep "^pre-restore-s\{35\}-[0-9]\{8\}-[0-9]\{6\}$") ||
    fail "no safety snapshot cut to 63 characters: $(ls "$V/snapshots")"
[ ${#pre_long} = 63 ] || fail "safety snapshot name of ${#pre_long} characters: $pre_long"
guest_start "$v"
guest_wait_agent "$v"
[ "$(marker)" = one ] || fail "stopped restore gives '$(marker)'"

# BestEffort: a MAC address another VM has is given up, and said
guest_make_disk "$GUEST_DIR/other.qcow2" 64M qcow2
guest_define "$other" --disk "$GUEST_DIR/other.qcow2:qcow2" --nic 52:54:00:5a:00:01
guest_exec "$v" 'echo five >/data/marker && sync' || fail "marker five"
echo 's1 mode=BestEffort policy=StopTarget' >"$V/restore" || fail "BestEffort: $(cat "$V/restore")"
grep -q "^conflict: interface 52:54:00:5a:00:01: .*VM '$other'" "$V/restore" ||
    fail "BestEffort does not list the conflict: $(cat "$V/restore")"
guest_wait_agent "$v"
[ "$(marker)" = one ] || fail "BestEffort gives '$(marker)'"
mac=$(guest_virsh domiflist "$v" | awk 'NR > 2 && NF { print $5 }')
[ -n "$mac" ] && [ "$mac" != 52:54:00:5a:00:01 ] || fail "the MAC in conflict was kept: '$mac'"
guest_undefine "$other"
rm -f "$GUEST_DIR/other.qcow2"

# WaitEventually: the restore waits until the VM is stopped by someone
# else, then leaves it stopped
guest_exec "$v" 'echo six >/data/marker && sync' || fail "marker six"
(sleep 2; guest_shutdown "$v") &
echo 's1 policy=WaitEventually' >"$V/restore" || fail "WaitEventually: $(cat "$V/restore")"
wait $! || fail "shutdown"
[ "$(guest_state "$v")" = "shut off" ] || fail "WaitEventually started the VM"
guest_start "$v"
guest_wait_agent "$v"
[ "$(marker)" = one ] || fail "WaitEventually gives '$(marker)'"

# deleting every snapshot: the VM keeps running on its own data, the
# layers it builds on stay, those nothing needs go
for s in $(ls "$V/snapshots"); do
    rmdir "$V/snapshots/$s" || fail "rmdir $s"
done
[ -z "$(ls "$V/snapshots")" ] || fail "snapshots left: $(ls "$V/snapshots")"
[ "$(marker)" = one ] || fail "the VM lost its data after the rmdirs"
guest_exec "$v" 'echo four >/data/marker && sync' || fail "marker four"
guest_shutdown "$v"
guest_start "$v"
guest_wait_agent "$v"
[ "$(marker)" = four ] || fail "after a reboot the guest sees '$(marker)'"
expect_images_clean "$GUEST_DIR"
# what is left: the base, the VM's chain, nothing else
chain=$(qemu-img info -U --backing-chain "$(guest_virsh domblklist "$v" | awk '$1 == "vda" { print $2 }')" |
    sed -n 's/^image: //p' | sort)
files=$(ls -d "$GUEST_DIR"/*.qcow2 | sort)
[ "$chain" = "$files" ] || fail "files nothing uses were left: $(comm -13 <(echo "$chain") <(echo "$files"))"
