#!/usr/bin/env bash
# guest-events.sh: changes made with virsh after mounting show through the
# mount within 1 s (libvirt events invalidate the kernel's caches); a
# snapshot made with virsh appears with its phase, time and definition.
. "${0%/*}/lib.sh"
requires_fuse
use_guests

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
vm=${TEST_PREFIX}ev
V=$mnt/$vm

# warm the kernel's caches first, so that the checks below see invalidation
ls -l "$mnt" >/dev/null
expect_errno ENOENT stat "$V"

guest_make_disk "$GUEST_DIR/ev.qcow2" 64M qcow2
guest_define "$vm" --disk "$GUEST_DIR/ev.qcow2:qcow2"
wait_until 1 test -d "$V" || fail "defined VM not shown within 1 s"
ls "$mnt" | grep -qx "$vm" || fail "defined VM not listed"
expect_content "$V/state" "shut off"

# a shell inside the VM's tree keeps a valid working directory across
# the VM's changes (only values are invalidated, not names)
at_exit "cd /"
cd "$V/snapshots"
guest_start "$vm"
wait_until 1 grep -qx running "$V/state" || fail "started VM not running within 1 s: $(cat "$V/state")"
[ "$(/bin/pwd -P)" = "$V/snapshots" ] || fail "working directory lost after an event"
cd /
guest_wait_agent "$vm"
wait_until 1 grep -qx connected "$V/agent" || fail "agent not connected within 1 s"

# a snapshot made with virsh (external, disk-only, with metadata); the
# listing was read before, so the kernel holds it: libvirt has no event
# for snapshots, the directory's mtime tells the kernel it changed
ls "$V/snapshots" | grep -q . && fail "snapshots listed before any was made"
before=$(date -u +%s)
guest_virsh snapshot-create-as "$vm" by-virsh --disk-only --atomic \
    --diskspec "vda,file=$GUEST_DIR/ev.by-virsh.qcow2" >/dev/null
wait_until 3 test -d "$V/snapshots/by-virsh" || fail "virsh snapshot not shown"
wait_until 3 sh -c "ls '$V/snapshots' | grep -qx by-virsh" || fail "virsh snapshot not listed"
S=$V/snapshots/by-virsh
expect_content "$S/phase" Succeeded
grep -qx Online "$S/indications" || fail "indications: $(cat "$S/indications")"
created=$(cat "$S/created")
[[ $created =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] ||
    fail "created is not RFC 3339: $created"
t=$(date -u -d "$created" +%s)
[ "$t" -ge $((before - 1)) ] && [ "$t" -le $(($(date -u +%s) + 1)) ] ||
    fail "created $created is not the time of the snapshot"
grep -q "<name>$vm</name>" "$S/domain.xml" || fail "snapshot domain.xml"
[ "$(ls "$S/volumes")" = vda.img ] || fail "snapshot volumes: $(ls "$S/volumes")"
grep -q '"phase": "Succeeded"' "$S/status.json" || fail "status.json: $(cat "$S/status.json")"
[ -z "$(cat "$S/clone")" ] || fail "clone does not read as empty"

guest_destroy "$vm"
wait_until 1 grep -qx "shut off" "$V/state" || fail "destroyed VM not shut off within 1 s"
expect_content "$V/agent" disconnected

# the snapshot deleted with virsh goes away
guest_virsh snapshot-delete "$vm" by-virsh --metadata >/dev/null
wait_until 3 sh -c "! test -e '$S'" || fail "deleted snapshot still shown"
wait_until 3 sh -c "! ls '$V/snapshots' | grep -q ." || fail "deleted snapshot still listed"

guest_undefine "$vm"
wait_until 1 sh -c "! test -e '$V'" || fail "undefined VM still shown after 1 s"
expect_errno ENOENT stat "$V/state"
ls "$mnt" | grep -qx "$vm" && fail "undefined VM still listed"
echo "PASS: $testname"
