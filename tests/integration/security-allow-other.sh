#!/usr/bin/env bash
# security-allow-other.sh: who may do what (SPEC "Security"). By default only
# root sees the tree; with allow_other the kernel checks the modes: members
# of admin_group read definitions and volumes and make changes, other users
# see names and states only. Users and the group are the test's own.
. "${0%/*}/lib.sh"
requires_fuse
requires_root
requires useradd
requires runuser

base=${TEST_PREFIX%-}
group=${base}g
admin=${base}a
other=${base}o
groupadd "$group"
at_exit "groupdel '$group' 2>/dev/null || true"
useradd -M -N -g nogroup -G "$group" -s /bin/sh "$admin"
at_exit "userdel '$admin' 2>/dev/null || true"
useradd -M -N -g nogroup -s /bin/sh "$other"
at_exit "userdel '$other' 2>/dev/null || true"
chmod 0755 "$(workdir)"
# the probe must be reachable by the users too
probe=$(workdir)/errno-probe
cp "$ERRNO_PROBE" "$probe"
chmod 0755 "$probe"

as() {
    local who=$1
    shift
    runuser -u "$who" -- "$@"
}
as_errno() {   # as_errno USER ERRNO OP PATH [ARG...]
    local who=$1 want=$2 got
    shift 2
    got=$(as "$who" "$probe" "$@")
    [ "$got" = "$want" ] || fail "as $who: $*: expected $want, got $got"
}

# default: root only
mnt=$(workdir)/mnt
start_vmsnapfs test:///default "$mnt"
as_errno "$admin" EACCES stat "$mnt/test"
as_errno "$other" EACCES stat "$mnt/test"
[ "$(cat "$mnt/test/state")" = running ] || fail "root cannot read state"
fusermount3 -u "$mnt"

# allow_other with admin_group
mnt2=$(workdir)/mnt2
start_vmsnapfs test:///default "$mnt2" -o "allow_other,admin_group=$group"
vm=$mnt2/test
expect_log "'test': (restore|snapshot) '.*' failed: "
[ "$(stat -c %G "$vm/domain.xml")" = "$group" ] || fail "domain.xml group: $(stat -c %G "$vm/domain.xml")"

# everybody: names, state, agent, events
[ "$(as "$other" ls "$mnt2")" = test ] || fail "other cannot list the VMs"
[ "$(as "$other" cat "$vm/state")" = running ] || fail "other cannot read state"
as_errno "$other" OK read "$vm/agent"
as_errno "$other" OK read "$vm/events"
# others: no definitions, no volumes, no changes
as_errno "$other" EACCES read "$vm/domain.xml"
as_errno "$other" EACCES read "$vm/volumes/vda.img"
as_errno "$other" EACCES mkdir "$vm/snapshots/s1"
as_errno "$other" EACCES write "$vm/restore" $'s1\n'
as_errno "$other" EPERM chmod "$vm/state"
! grep -q "restore s1" "$vm/events" || fail "a write by another user ran"

# admin_group: definitions, volumes and changes (that reach the backend:
# its answers, not EACCES)
as_errno "$admin" OK read "$vm/domain.xml"
# (the test driver's disk has no file: the backend fails, the kernel did not refuse)
got=$(as "$admin" "$probe" read "$vm/volumes/vda.img")
[ "$got" = EIO ] || fail "admin reading a volume: $got, not the backend's EIO"
expect_log "qemu-img failed|virDomainBackupBegin|open-volume 'vda' failed"
as_errno "$admin" ENOENT write "$vm/restore" $'no-such-snapshot\n'
grep -q "restore no-such-snapshot failed no such snapshot" "$vm/events" ||
    fail "the admin's restore line did not reach the daemon"
as_errno "$admin" EINVAL mkdir "$vm/snapshots/Bad_Name"
# still a read-only tree for the admin (root gets EROFS from the daemon)
as_errno "$admin" EACCES write "$vm/state" x      # 0444: the kernel says so
as_errno "$admin" EPERM chmod "$vm/state"

# root still does everything
grep -q "<name>test</name>" "$vm/domain.xml" || fail "root cannot read domain.xml"
echo "PASS: $testname"
