#!/usr/bin/env bash
# clone-guest.sh: `echo NEWVM > VM/snapshots/S/clone` on a real guest. The
# clone is defined stopped, boots with the snapshot's data, has its own
# UUID, MAC address, disk and console; the source VM is untouched. EEXIST
# for a taken name, EINVAL for a bad one. After rmdir of the snapshot the
# clone still boots, with its own data; qemu-img check is clean.
. "${0%/*}/lib.sh"
requires_fuse
requires debugfs
use_guests

a=${TEST_PREFIX}src
c=${TEST_PREFIX}copy
guest_make_disk "$GUEST_DIR/src.qcow2" 128M qcow2
guest_define "$a" --disk "$GUEST_DIR/src.qcow2:qcow2" --nic 52:54:00:5b:00:01
guest_start "$a"
guest_wait_agent "$a"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
A=$mnt/$a
marker() { guest_exec "$1" 'cat /data/marker' | tr -d '\r\n'; }
disk_of() { guest_virsh domblklist "$1" | awk '$1 == "vda" { print $2 }'; }
mac_of() { guest_virsh domiflist "$1" | awk 'NR > 2 && NF { print $5 }'; }

guest_exec "$a" 'echo one >/data/marker && sync' || fail "marker one"
mkdir "$A/snapshots/s"
guest_exec "$a" 'echo two >/data/marker && sync' || fail "marker two"
src_xml=$(guest_virsh dumpxml --inactive "$a")
src_disk=$(disk_of "$a")

# the clone: defined, stopped, its own identity
echo "$c" >"$A/snapshots/s/clone" || fail "clone failed: $(tail -n 3 "$A/events")"
wait_until 5 test -d "$mnt/$c" || fail "the clone is not in the tree"
[ "$(cat "$mnt/$c/state")" = "shut off" ] || fail "the clone is not stopped: $(cat "$mnt/$c/state")"
[ -z "$(cat "$A/snapshots/s/clone")" ] || fail "clone does not read as empty"
grep -q "clone s succeeded" "$A/events" || fail "no event: $(cat "$A/events")"
[ "$(guest_virsh domuuid "$c")" != "$(guest_virsh domuuid "$a")" ] || fail "the clone has the source's UUID"
[ -n "$(mac_of "$c")" ] && [ "$(mac_of "$c")" != "$(mac_of "$a")" ] ||
    fail "the clone's MAC '$(mac_of "$c")' is not its own"
clone_disk=$(disk_of "$c")
[ -f "$clone_disk" ] && [ "$clone_disk" != "$src_disk" ] || fail "the clone's disk '$clone_disk'"
[ "$(stat -c %a "$clone_disk")" = 600 ] || fail "the clone's disk is mode $(stat -c %a "$clone_disk")"
[ "$(guest_virsh dumpxml --inactive "$c" | grep -c "$a")" = 0 ] ||
    fail "the clone's definition still names the source: $(guest_virsh dumpxml --inactive "$c" | grep "$a")"

# the source VM is untouched
[ "$(guest_state "$a")" = running ] || fail "the source VM stopped"
[ "$(guest_virsh dumpxml --inactive "$a")" = "$src_xml" ] || fail "the source's definition changed"
[ "$(marker "$a")" = two ] || fail "the source VM lost its data"

# the clone boots with the snapshot's data, and writes its own disk
guest_start "$c"
guest_wait_agent "$c"
[ "$(marker "$c")" = one ] || fail "the clone sees '$(marker "$c")', not one"
guest_exec "$c" 'echo three >/data/marker && sync' || fail "marker three"
[ "$(marker "$a")" = two ] || fail "the clone's write reached the source"
cp "$A/snapshots/s/volumes/vda.img" "$(workdir)/s.raw"
[ "$(debugfs -R 'cat /marker' "$(workdir)/s.raw" 2>/dev/null)" = one ] ||
    fail "the clone's write reached the snapshot"
rm -f "$(workdir)/s.raw"

# names: taken, bad
expect_errno EEXIST write "$A/snapshots/s/clone" "$c"
expect_errno EEXIST write "$A/snapshots/s/clone" "$a"
expect_errno EINVAL write "$A/snapshots/s/clone" "Bad_Name"
expect_log "'$a': clone 's' failed: "

# the snapshot goes; the clone keeps its data and boots
guest_shutdown "$c"
rmdir "$A/snapshots/s" || fail "rmdir of the snapshot"
[ ! -e "$A/snapshots/s" ] || fail "the snapshot is still there"
guest_start "$c"
guest_wait_agent "$c"
[ "$(marker "$c")" = three ] || fail "after rmdir the clone sees '$(marker "$c")'"
[ "$(marker "$a")" = two ] || fail "after rmdir the source sees '$(marker "$a")'"
expect_images_clean "$GUEST_DIR"
guest_shutdown "$c"
guest_shutdown "$a"
guest_start "$a"
guest_wait_agent "$a"
[ "$(marker "$a")" = two ] || fail "after a reboot the source sees '$(marker "$a")'"
expect_images_clean "$GUEST_DIR"
