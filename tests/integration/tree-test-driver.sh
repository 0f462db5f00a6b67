#!/usr/bin/env bash
# tree-test-driver.sh: the tree's shape, values, errnos and read-only rules,
# on libvirt's in-process test driver (fast; proves nothing about guests).
. "${0%/*}/lib.sh"
requires_fuse
requires_root

mnt=$(workdir)/mnt
start_vmsnapfs test:///default "$mnt"
vm=$mnt/test

# the top level: one directory per domain
[ "$(ls "$mnt")" = test ] || fail "top level: $(ls "$mnt")"
[ -d "$vm" ] || fail "$vm is not a directory"

# a VM directory holds exactly the SPEC's entries
got=$(ls "$vm" | tr '\n' ' ')
[ "$got" = "agent domain.xml events restore snapshots state volumes " ] ||
    fail "VM directory: $got"

expect_content "$vm/state" running
expect_content "$vm/agent" disconnected
grep -q "<name>test</name>" "$vm/domain.xml" || fail "domain.xml has no <name>"
grep -q "<uuid>" "$vm/domain.xml" || fail "domain.xml has no <uuid>"
# st_size is the content's size, so tools that trust it (tar) read it all
[ "$(stat -c %s "$vm/state")" = "$(cat "$vm/state" | wc -c)" ] ||
    fail "st_size of state differs from its content"
[ "$(stat -c %s "$vm/domain.xml")" = "$(cat "$vm/domain.xml" | wc -c)" ] ||
    fail "st_size of domain.xml differs from its content"

# volumes: the test driver's disk, with its capacity as st_size
[ "$(ls "$vm/volumes")" = vda.img ] || fail "volumes: $(ls "$vm/volumes")"
size=$(stat -c %s "$vm/volumes/vda.img")
[ "$size" -gt 0 ] || fail "vda.img size $size"

# a file keeps its inode number when the kernel forgets it and looks it up
# again (cp refuses a file "replaced while being copied" otherwise), and
# readdir tells the same numbers as stat
ino=$(stat -c %i "$vm/volumes/vda.img")
dino=$(stat -c %i "$vm")
sync
echo 2 >/proc/sys/vm/drop_caches     # dentries and inodes: FUSE forgets them
[ "$(stat -c %i "$vm/volumes/vda.img")" = "$ino" ] || fail "vda.img changed its inode number"
[ "$(stat -c %i "$vm")" = "$dino" ] || fail "the VM directory changed its inode number"
[ "$(ls -i "$vm/volumes" | awk '{print $1}')" = "$ino" ] || fail "readdir's inode number"
[ "$ino" != "$(stat -c %i "$vm/state")" ] || fail "two files share an inode number"

# modes: data for root/admin_group, control files writable, snapshots/ mkdir-able
[ "$(stat -c %a "$vm/domain.xml")" = 440 ] || fail "domain.xml mode"
[ "$(stat -c %a "$vm/volumes/vda.img")" = 440 ] || fail "vda.img mode"
[ "$(stat -c %a "$vm/state")" = 444 ] || fail "state mode"
[ "$(stat -c %a "$vm/restore")" = 660 ] || fail "restore mode"

# snapshots/ is empty on the test driver
[ -z "$(ls "$vm/snapshots")" ] || fail "snapshots not empty"

# unknown paths
expect_errno ENOENT stat "$mnt/no-such-vm"
expect_errno ENOENT stat "$vm/no-such-file"
expect_errno ENOENT stat "$vm/volumes/vdz.img"
expect_errno ENOENT stat "$vm/volumes/vda"
expect_errno ENOENT stat "$vm/snapshots/none"
expect_errno ENOTDIR stat "$vm/state/x"

# read-only files and the fixed tree
expect_errno EROFS open-w "$vm/state"
expect_errno EROFS write "$vm/agent" x
expect_errno EROFS open-w "$vm/domain.xml"
expect_errno EROFS open-w "$vm/volumes/vda.img"
expect_errno EROFS truncate "$vm/volumes/vda.img"
expect_errno EROFS truncate "$vm/state"
expect_errno EPERM chmod "$vm/volumes/vda.img"
expect_errno EROFS create "$vm/newfile"
expect_errno EROFS create "$mnt/newfile"
expect_errno EROFS unlink "$vm/state"
expect_errno EROFS rename "$vm/state" "$vm/state2"
expect_errno EPERM mkdir "$vm/newdir"
expect_errno EPERM mkdir "$mnt/newvm"
expect_errno EPERM rmdir "$vm/volumes"
expect_errno EPERM rmdir "$vm"

# snapshot names are checked before anything else (SPEC "Names")
for bad in Upper -x x- a..b a_b "$(printf 'a%.0s' {1..64})"; do
    expect_errno EINVAL mkdir "$vm/snapshots/$bad"
done
grep -q "snapshot Upper failed invalid snapshot name" "$vm/events" ||
    fail "no reason in events for a bad name: $(cat "$vm/events")"
expect_log "'test': snapshot '.*' failed: invalid snapshot name"

# a line written to restore is checked first: errors come from write()
expect_errno EINVAL write "$vm/restore" "a/b"
expect_errno ENOENT write "$vm/restore" "Bad_Name"
expect_errno EINVAL write "$vm/restore" "s1 policy=Sometimes"
expect_errno EINVAL write "$vm/restore" "s1 colour=blue"
expect_errno EINVAL write "$vm/restore" $'\n'
expect_errno ENOENT write "$vm/restore" "no-such-snapshot policy=StopTarget"
grep -q "restore - failed malformed line: unknown policy" "$vm/events" ||
    fail "no reason for a malformed restore line: $(cat "$vm/events")"
grep -q "restore no-such-snapshot failed no such snapshot" "$vm/events" ||
    fail "no reason for an unknown snapshot"
expect_log "'test': restore '.*' failed: "

# recursive tools walk the tree's metadata without errors
find "$mnt" >/dev/null || fail "find failed"
ls -lR "$mnt" >/dev/null || fail "ls -lR failed"
echo "PASS: $testname"
