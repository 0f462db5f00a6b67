#!/usr/bin/env bash
# hostile-input.sh: what a careless or hostile writer can do to the control
# files and the logs, on libvirt's test driver: a line split over several
# write()s runs whole and once; writes at odd offsets, NULs or endless lines
# run nothing; names with newlines cannot forge lines in `events` or the
# log; a password in SOURCE never reaches a log or the mount table.
. "${0%/*}/lib.sh"
requires_fuse
requires_root

mnt=$(workdir)/mnt
start_vmsnapfs test:///default "$mnt"
vm=$mnt/test
expect_log "'test': (restore|clone|snapshot) '.*' failed: "

events_lines() { grep -c '' "$vm/events" || true; }

# A line in two writes is parsed whole: the second half makes it malformed,
# so EINVAL (the first half alone would be an unknown snapshot: ENOENT).
expect_errno EINVAL writes "$vm/restore" "x1" $' mode=Bogus\n'
grep -q "restore - failed malformed line: unknown mode" "$vm/events" ||
    fail "the split line did not run whole: $(cat "$vm/events")"
! grep -q "restore x1 failed" "$vm/events" || fail "a fragment ran: $(cat "$vm/events")"

# ... and once, answered from the write() that ends the line
expect_errno ENOENT writes "$vm/restore" "no-such" $'-snapshot\n'
[ "$(grep -c "restore no-such-snapshot failed no such snapshot" "$vm/events")" = 1 ] ||
    fail "the split line ran other than once: $(cat "$vm/events")"
! grep -q "restore no-such failed" "$vm/events" || fail "a fragment ran"

# three pieces, the newline alone in the last one
expect_errno ENOENT writes "$vm/restore" "three" "-pie" $'ces\n'
grep -q "restore three-pieces failed no such snapshot" "$vm/events" ||
    fail "three pieces: $(cat "$vm/events")"

# a last line without a newline runs at close(), and close() answers
expect_errno ENOENT writes "$vm/restore" "at" "-close"
grep -q "restore at-close failed no such snapshot" "$vm/events" ||
    fail "no line ran at close: $(cat "$vm/events")"

# a write at another offset than the line's end: EINVAL, nothing runs
n=$(events_lines)
expect_errno EINVAL pwrite "$vm/restore" 7 $'no-such-snapshot\n'
grep -q "restore - failed malformed write: a write at another offset" "$vm/events" ||
    fail "no reason for a write at an offset: $(cat "$vm/events")"
[ "$(events_lines)" = $((n + 1)) ] || fail "a write at an offset ran something"

# an endless line: EINVAL, nothing runs, not even at close
long=$(head -c 5000 /dev/zero | tr '\0' a)
expect_errno EINVAL writes "$vm/restore" "$long"
grep -q "malformed write: a line longer than 4096 bytes" "$vm/events" ||
    fail "no reason for an endless line"
n=$(events_lines)
expect_errno EINVAL writes "$vm/restore" "$(head -c 3000 /dev/zero | tr '\0' b)" \
    "$(head -c 3000 /dev/zero | tr '\0' b)" $'\n'
[ "$(events_lines)" -le $((n + 2)) ] || fail "an endless line ran"
! grep -q "restore bbbb" "$vm/events" || fail "a part of an endless line ran"

# a NUL byte in a line: EINVAL
printf 'x\0y\n' >"$(workdir)/nul"
if dd if="$(workdir)/nul" of="$vm/restore" bs=64 2>/dev/null; then
    fail "a line with a NUL was taken"
fi

# names and reasons cannot forge lines: a rejected name with a newline
# and a fake event after it stays one escaped line
n=$(events_lines)
fake=$'bad\n2026-01-01T00:00:00Z snapshot forged succeeded all fine'
expect_errno EINVAL mkdir "$vm/snapshots/$fake"
[ "$(events_lines)" = $((n + 1)) ] || fail "a name added lines to events: $(cat "$vm/events")"
! grep -q "^2026-01-01T00:00:00Z snapshot forged" "$vm/events" || fail "a forged events line"
grep -q 'snapshot bad\\x0a2026-01-01T00:00:00Z\\x20snapshot' "$vm/events" ||
    fail "the name is not escaped in events: $(tail -n 1 "$vm/events")"
! grep -q "^2026-01-01T00:00:00Z snapshot forged" "$VMSNAPFS_LOG" || fail "a forged log line"
grep -q 'bad\\x0a2026' "$VMSNAPFS_LOG" || fail "the name is not escaped in the log"
# a space in a name cannot add a field
expect_errno EINVAL mkdir "$vm/snapshots/two words"
tail -n 1 "$vm/events" | grep -q ' snapshot two\\x20words failed ' ||
    fail "a space in a name: $(tail -n 1 "$vm/events")"

# a password in SOURCE: never in the log, nor in the mount table
secret=s3cret-pw-$$
out=$(workdir)/pw.log
mkdir -p "$(workdir)/mnt2"
if timeout 60 "$VMSNAPFS" -f "qemu+tcp://admin:$secret@127.0.0.1:1/system" \
    "$(workdir)/mnt2" 2>"$out"; then
    fusermount3 -u "$(workdir)/mnt2" || true
    fail "a mount of an unreachable host succeeded"
fi
[ -s "$out" ] || fail "no message for an unreachable host"
! grep -q "$secret" "$out" || fail "the password was logged: $(cat "$out")"
grep -q "admin:\*\*\*@127.0.0.1" "$out" || fail "the source is not shown redacted: $(cat "$out")"
! grep -q "$secret" /proc/mounts || fail "the password is in the mount table"

echo "PASS: $testname"
