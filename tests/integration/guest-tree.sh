#!/usr/bin/env bash
# guest-tree.sh: on real booted guests: state, agent, domain.xml and the
# volume sizes of raw and qcow2 disks, as a user would check them.
. "${0%/*}/lib.sh"
requires_fuse
use_guests

a=${TEST_PREFIX}agent
b=${TEST_PREFIX}noagent
guest_make_disk "$GUEST_DIR/a.raw" 64M raw
guest_make_disk "$GUEST_DIR/a.qcow2" 96M qcow2
guest_make_disk "$GUEST_DIR/b.raw" 32M raw
guest_define "$a" --disk "$GUEST_DIR/a.raw" --disk "$GUEST_DIR/a.qcow2:qcow2"
guest_define "$b" --disk "$GUEST_DIR/b.raw" --noagent

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
A=$mnt/$a
B=$mnt/$b

# stopped: state and agent
expect_content "$A/state" "shut off"
expect_content "$A/agent" disconnected

# volume sizes: the virtual disk size, for raw and for qcow2 (whose file
# is much smaller than the disk it holds)
[ "$(ls "$A/volumes" | tr '\n' ' ')" = "vda.img vdb.img " ] ||
    fail "volumes: $(ls "$A/volumes")"
[ "$(stat -c %s "$A/volumes/vda.img")" = $((64 << 20)) ] ||
    fail "vda.img size $(stat -c %s "$A/volumes/vda.img")"
[ "$(stat -c %s "$A/volumes/vdb.img")" = $((96 << 20)) ] ||
    fail "vdb.img size $(stat -c %s "$A/volumes/vdb.img")"
[ "$(stat -c %s "$GUEST_DIR/a.qcow2")" -lt $((96 << 20)) ] ||
    fail "the qcow2 file is not smaller than its disk: the check proves nothing"

# domain.xml is libvirt's definition, as virsh shows it
guest_virsh dumpxml "$a" | sed '${/^$/d}' >"$(workdir)/a.xml"  # virsh adds a blank line
cmp -s "$A/domain.xml" "$(workdir)/a.xml" ||
    fail "domain.xml differs from virsh dumpxml: $(diff "$A/domain.xml" "$(workdir)/a.xml" | head)"

# boot both; the one with an agent says so once the agent is up
guest_start "$a"
guest_start "$b"
wait_until 2 grep -qx running "$A/state" || fail "state of a running VM: $(cat "$A/state")"
expect_content "$B/state" running
guest_wait_agent "$a"
wait_until 2 grep -qx connected "$A/agent" || fail "agent: $(cat "$A/agent")"
expect_content "$A/agent" connected

# the guest without an agent: disconnected, also once it has booted
guest_wait_console "$b" "vmsnapfs-guest: .*ready" 120 || fail "$b did not boot"
expect_content "$B/agent" disconnected

# the live definition (agent state and all), as virsh shows it now
guest_virsh dumpxml "$a" | sed '${/^$/d}' >"$(workdir)/a-live.xml"
cmp -s "$A/domain.xml" "$(workdir)/a-live.xml" ||
    fail "live domain.xml differs from virsh dumpxml"
grep -q "state='connected'" "$A/domain.xml" || fail "live XML lacks the agent state"

# data written in the guest does not change the disk's size
guest_exec "$a" 'echo hello >/data/hello && sync' || fail "guest_exec"
[ "$(stat -c %s "$A/volumes/vda.img")" = $((64 << 20)) ] || fail "vda size changed"

# stopped again: shut off and disconnected, without remounting
guest_destroy "$a"
wait_until 1 grep -qx "shut off" "$A/state" || fail "state after destroy: $(cat "$A/state")"
expect_content "$A/agent" disconnected
guest_destroy "$b"
wait_until 1 grep -qx "shut off" "$B/state" || fail "state of b after destroy"

# a VM started while mounted gets a copy of the mount in QEMU's own mount
# namespace (libvirt's default), which keeps the kernel's connection: an
# unmount must still end the daemon
guest_start "$b"
fusermount3 -u "$mnt"
wait_until 5 sh -c "! kill -0 $VMSNAPFS_PID" ||
    fail "vmsnapfs still runs after the unmount (a VM holds a copy of the mount)"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status after the unmount"
echo "PASS: $testname"
