#!/usr/bin/env bash
# restore-crash.sh: the daemon is killed (SIGKILL, through the
# VMSNAPFS_FAULT crash points) at several points of a StopTarget restore;
# a new mount finishes or rolls it back. Each time the VM boots again, its
# disk is fully old (marker two) before the new definition is in place and
# fully restored (marker one) once it is; no plan and no overlay of a
# rolled-back restore is left; qemu-img check is clean on every image.
# Recovery runs in the background: the new mount is up at once, even when
# the restore it finishes waits for the VM.
. "${0%/*}/lib.sh"
requires_fuse
use_guests

v=${TEST_PREFIX}k
guest_make_disk "$GUEST_DIR/k.qcow2" 128M qcow2
guest_define "$v" --disk "$GUEST_DIR/k.qcow2:qcow2"
guest_start "$v"
guest_wait_agent "$v"

mnt=$(workdir)/mnt
start_vmsnapfs qemu:///system "$mnt"
V=$mnt/$v
marker() { guest_exec "$v" 'cat /data/marker' | tr -d '\r\n'; }
vm_running() { [ "$(guest_state "$v")" = running ]; }
no_plan() { ! ls "$VMSNAPFS_STATE_DIR"/restore/*.json >/dev/null 2>&1; }

guest_exec "$v" 'echo one >/data/marker && sync' || fail "marker one"
mkdir "$V/snapshots/s1"
fusermount3 -u "$mnt"
wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"

expect_log "VMSNAPFS_FAULT="
expect_log "rolled back the restore to 's1' that a killed vmsnapfs left"
expect_log "finished the restore to 's1' that a killed vmsnapfs left"

n=0
for point in restore-stopped restore-safety restore-overlays restore-defined \
    restore-define-written restore-started; do
    n=$((n + 1))
    guest_exec "$v" 'echo two >/data/marker && sync' || fail "$point: marker two"
    files_before=$(ls "$GUEST_DIR"/*.qcow2 | wc -l)

    log=$(workdir)/killed-$n.log
    VMSNAPFS_FAULT=$point "$VMSNAPFS" -f qemu:///system "$mnt" 2>"$log" &
    kpid=$!
    wait_until 10 is_mounted "$mnt" || fail "$point: no mount"
    (echo 's1 policy=StopTarget' >"$V/restore") 2>/dev/null &&
        fail "$point: the restore finished although the daemon was to be killed"
    wait "$kpid" && fail "$point: the daemon was not killed"
    grep -q "VMSNAPFS_FAULT=$point" "$log" || fail "$point: not killed there: $(cat "$log")"
    fusermount3 -uz "$mnt"

    # a new daemon: the mount is up at once; the VM is started again, old
    # or restored, never between
    t0=$(date +%s%N)
    start_vmsnapfs qemu:///system "$mnt"
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$ms" -lt 5000 ] || fail "$point: the mount took $ms ms (recovery held it up)"
    wait_until 120 vm_running || fail "$point: the VM was not started again"
    wait_until 60 no_plan || fail "$point: the restore plan stays: $(ls "$VMSNAPFS_STATE_DIR"/restore)"
    guest_wait_agent "$v"
    case $point in
        restore-defined | restore-define-written | restore-started) want=one ;;
        *) want=two ;;
    esac
    got=$(marker)
    [ "$got" = "$want" ] || fail "$point: the guest sees '$got', not '$want'"
    ls "$VMSNAPFS_STATE_DIR"/restore/*.json >/dev/null 2>&1 &&
        fail "$point: a restore plan is left: $(ls "$VMSNAPFS_STATE_DIR"/restore)"
    expect_images_clean "$GUEST_DIR" "$point"
    if [ "$point" = restore-overlays ]; then
        # rolled back: the new overlays are gone (the safety snapshot's stays)
        [ "$(ls "$GUEST_DIR"/*.qcow2 | wc -l)" = $((files_before + 1)) ] ||
            fail "$point: files left: $(ls "$GUEST_DIR")"
    fi
    grep -q "$([ $want = one ] && echo finished || echo 'rolled back') the restore" \
        "$VMSNAPFS_LOG" || [ $point = restore-stopped ] || [ $point = restore-safety ] ||
        fail "$point: the new daemon did not say what it did"
    fusermount3 -u "$mnt"
    wait "$VMSNAPFS_PID" || fail "vmsnapfs exit status"
done

# and a restore that is not killed still works afterwards
start_vmsnapfs qemu:///system "$mnt"
guest_exec "$v" 'echo two >/data/marker && sync' || fail "marker two"
echo 's1 policy=StopTarget' >"$V/restore" || fail "restore: $(cat "$V/restore")"
guest_wait_agent "$v"
[ "$(marker)" = one ] || fail "the last restore gives '$(marker)'"
