#!/usr/bin/env bash
# snapshot-deadline.sh: a freeze slower than failure_deadline: mkdir fails
# with ETIMEDOUT within the deadline plus a little, leaves nothing, keeps
# the VM busy (EBUSY) until the late freeze lands, and the guest is thawed
# once it does. Then SIGKILL of the daemon in the middle of a slow freeze:
# a new mount thaws the guest once the freeze answers, and the VM still
# runs. Then SIGTERM while a late freeze is pending: the daemon waits for
# it, thaws the guest, and only then ends (the hook sleeps longer than the
# 10 s an older version gave pending thaws).
. "${0%/*}/lib.sh"
requires_fuse
use_guests

vm=${TEST_PREFIX}slow
guest_make_disk "$GUEST_DIR/slow.qcow2" 64M qcow2
# the guest's fsfreeze hook sleeps 14 s on freeze
guest_define "$vm" --disk "$GUEST_DIR/slow.qcow2:qcow2" --cmdline freezehook_sleep=14
guest_start "$vm"
guest_wait_agent "$vm"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt" -o failure_deadline=5s
V=$mnt/$vm
expect_log "freeze answered after the deadline|thaw failed .*retrying"
expect_log "'$vm': snapshot 'late' failed: the freeze did not answer"
expect_log "'$vm': snapshot 'second' failed: another operation"

t0=$(date +%s.%N)
expect_errno ETIMEDOUT mkdir "$V/snapshots/late"
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a >= 4.9 && b - a < 7) }' ||
    fail "ETIMEDOUT after $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s, not ~5 s"
# nothing left behind
expect_errno ENOENT stat "$V/snapshots/late"
[ -z "$(ls "$V/snapshots")" ] || fail "snapshots left: $(ls "$V/snapshots")"
guest_virsh snapshot-list "$vm" --name | grep -q . && fail "a snapshot left in libvirt"
ls "$GUEST_DIR"/*.late.*.qcow2 2>/dev/null && fail "an overlay left"
grep -q "snapshot late failed the freeze did not answer within the failure deadline" "$V/events" ||
    fail "no reason in events: $(cat "$V/events")"
# while the late freeze is pending the VM is busy
expect_errno EBUSY mkdir "$V/snapshots/second"
# the guest is thawed once the late freeze lands (14 s after it began)
thawed() {
    guest_agent "$vm" '{"execute":"guest-fsfreeze-status"}' 2>/dev/null | grep -q thawed
}
wait_until 20 thawed || fail "the guest stayed frozen after a late freeze"
guest_exec "$vm" 'echo alive >/data/alive && sync' || fail "guest cannot write"
wait_until 5 sh -c "[ \"\$('$ERRNO_PROBE' stat '$V/snapshots/x')\" = ENOENT ]"
# and the VM is free again
ls "$VMSNAPFS_STATE_DIR"/freeze/ | grep -q . && fail "a freeze record left after the thaw"

# SIGKILL during a slow freeze; the next daemon thaws
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
"$VMSNAPFS" -f -o failure_deadline=1m qemu:///system "$mnt" 2>"$(workdir)/killed.log" &
kpid=$!
wait_until 10 is_mounted "$mnt" || fail "no mount"
mkdir "$V/snapshots/killed" 2>/dev/null &
mkpid=$!
wait_until 5 sh -c 'ls "$VMSNAPFS_STATE_DIR"/freeze/ | grep -q .' || fail "no freeze record"
sleep 1
kill -KILL "$kpid"
wait "$kpid" 2>/dev/null || true
wait "$mkpid" 2>/dev/null || true
fusermount3 -uz "$mnt"
t0=$(date +%s)
start_vmsnapfs qemu:///system "$mnt"
expect_log "a previous vmsnapfs froze a VM .* and did not thaw it"
wait_until 20 thawed || fail "not thawed within 20 s of the new mount"
[ "$(guest_state "$vm")" = running ] || fail "the VM does not run any more"
guest_exec "$vm" 'echo after >/data/after && sync' || fail "guest cannot write after the thaw"
wait_until 5 sh -c '! ls "$VMSNAPFS_STATE_DIR"/freeze/ | grep -q .' || fail "freeze record left"
# and the overlay the killed mkdir made is reclaimed, its record gone
no_killed_overlay() { ! ls "$GUEST_DIR"/*.killed.*.qcow2 >/dev/null 2>&1; }
wait_until 30 no_killed_overlay || fail "the killed mkdir's overlay is left: $(ls "$GUEST_DIR")"
ls "$VMSNAPFS_STATE_DIR"/snapshot/*.json 2>/dev/null && fail "a snapshot record is left"
expect_log "reclaimed what a mkdir of 'killed' killed half-way left"

# SIGTERM while a late freeze is pending: no exit before the thaw
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
tlog=$(workdir)/term.log
"$VMSNAPFS" -f -o failure_deadline=2s qemu:///system "$mnt" 2>"$tlog" &
tpid=$!
wait_until 10 is_mounted "$mnt" || fail "no mount"
expect_errno ETIMEDOUT mkdir "$V/snapshots/term"
kill -TERM "$tpid"
wait "$tpid" || fail "exit status $? after SIGTERM: $(cat "$tlog")"
thawed || fail "the daemon ended on SIGTERM and left the guest frozen: $(cat "$tlog")"
grep -q "waiting for 1 late freeze(s) to answer" "$tlog" ||
    fail "the daemon did not say what it waited for: $(cat "$tlog")"
! ls "$VMSNAPFS_STATE_DIR"/freeze/ | grep -q . || fail "a freeze record left after SIGTERM"
guest_exec "$vm" 'echo term >/data/term && sync' || fail "guest cannot write after SIGTERM"
echo "PASS: $testname"
