#!/usr/bin/env bash
# vmsnap-apply.sh: applying an increment (changes/NAME.img + NAME.map) to a
# full copy of its base gives exactly the newer disk, zero extents as holes;
# a map that breaks a rule or does not match the files changes nothing and
# says why (exit 2); a run killed before or while writing the image is
# finished by the next one from its journal; --dry-run changes nothing.
. "${0%/*}/lib.sh"
requires python3
: "${VMSNAP_APPLY:=$srcdir/build/tools/vmsnap-apply}"
[ -x "$VMSNAP_APPLY" ] || skip "vmsnap-apply was not built (needs OpenSSL)"

w=$(workdir)
cd "$w"

# base.img: 64 MiB, data in places, holes between; want.img: base with
# writes, overwrites, zero writes and a discard; changes.img: want's data in
# the changed ranges, holes elsewhere; changes.map: those ranges
python3 - <<'PY'
import json, os, random
MiB = 1 << 20
size = 64 * MiB + 4096          # not a multiple of 1 MiB
rnd = random.Random(13)
def blob(n):
    return rnd.randbytes(n)
with open("base.img", "wb") as f:
    f.truncate(size)
    for off in (0, 5 * MiB, 20 * MiB, 40 * MiB):
        f.seek(off); f.write(blob(3 * MiB))
changes = [  # offset, length, zero
    (4096, 65536, False),                   # overwrite inside data
    (5 * MiB - 8192, 16384, False),         # across the edge of data
    (10 * MiB, 2 * MiB, False),             # new data in a hole
    (20 * MiB + 512, 1 * MiB, True),        # zero write inside data
    (40 * MiB, 3 * MiB, True),              # a discard of a whole range
    (size - 4096, 4096, False),             # the last block
]
data = {}
with open("want.img", "wb") as w, open("base.img", "rb") as b:
    w.write(b.read())
with open("want.img", "r+b") as w, open("changes.img", "wb") as c:
    c.truncate(size)
    for off, n, zero in changes:
        d = bytes(n) if zero else blob(n)
        w.seek(off); w.write(d)
        if not zero:
            c.seek(off); c.write(d)
m = {"base": "night-1", "size": size,
     "extents": [{"offset": o, "length": n, "zero": z} for o, n, z in changes]}
json.dump(m, open("changes.map", "w"))
# bad maps, each breaking one rule
def bad(name, **kw):
    x = dict(m); x.update(kw); json.dump(x, open(name, "w"))
bad("wrong-size.map", size=size + 4096)
e = m["extents"]
bad("overlap.map", extents=[e[0], {"offset": 4096 + 100, "length": 10, "zero": False}] + e[2:])
bad("unordered.map", extents=[e[1], e[0]] + e[2:])
bad("past-end.map", extents=e + [{"offset": size - 10, "length": 20, "zero": False}])
open("truncated.map", "w").write(json.dumps(m)[:-20])
PY

sum() { sha256sum "$1" | cut -d' ' -f1; }
base_sum=$(sum base.img)

# a bad map: exit 2, a reason, nothing changed, no journal
for bad in wrong-size overlap unordered past-end truncated; do
    cp --sparse=always base.img t.img
    set +e
    "$VMSNAP_APPLY" t.img changes.img "$bad.map" 2>err.txt
    status=$?
    set -e
    [ "$status" = 2 ] || fail "$bad.map: exit status $status, wanted 2"
    grep -q . err.txt || fail "$bad.map: no reason given"
    [ "$(sum t.img)" = "$base_sum" ] || fail "$bad.map changed the image"
    [ ! -e t.img.vmsnap-apply-journal ] || fail "$bad.map left a journal"
done
cp --sparse=always base.img t.img
"$VMSNAP_APPLY" t.img changes.img wrong-size.map 2>err.txt && fail "a map of another disk size was applied"
grep -q "nothing was changed" err.txt || fail "no word that nothing changed: $(cat err.txt)"
# CHANGES.img of another size
truncate -s 1M short.img
"$VMSNAP_APPLY" t.img short.img changes.map 2>err.txt && fail "changes of another size were applied"
[ "$(sum t.img)" = "$base_sum" ] || fail "changes of another size changed the image"

# a dry run changes nothing and tells what it would do
out=$("$VMSNAP_APPLY" --dry-run t.img changes.img changes.map)
[[ $out == *"would write"* ]] || fail "dry run: $out"
[ "$(sum t.img)" = "$base_sum" ] || fail "the dry run changed the image"

# applied: exactly the newer disk; zero extents are holes
"$VMSNAP_APPLY" t.img changes.img changes.map >out.txt || fail "apply failed"
cmp t.img want.img || fail "base + changes differs from the newer disk"
[ ! -e t.img.vmsnap-apply-journal ] || fail "a journal left after a good run"
grep -q "changes since 'night-1'" out.txt || fail "summary: $(cat out.txt)"
python3 - t.img <<'PY' || fail "the discarded range is not a hole"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off = 40 << 20
hole = os.lseek(fd, off, os.SEEK_HOLE)
assert hole == off, "the discarded range holds data at %d" % off
PY

# killed after the journal was written, before the image was touched: the
# image is as it was, and the next run (of any increment) finishes it first
for point in apply-journal-written apply-half; do
    cp --sparse=always base.img t.img
    set +e
    VMSNAPFS_FAULT=$point "$VMSNAP_APPLY" t.img changes.img changes.map >/dev/null 2>&1
    status=$?
    set -e
    [ "$status" = 137 ] || fail "$point: not killed (status $status)"
    [ -e t.img.vmsnap-apply-journal ] || fail "$point: no journal left"
    if [ "$point" = apply-journal-written ]; then
        [ "$(sum t.img)" = "$base_sum" ] || fail "the image changed before its journal was whole"
    fi
    # the next run, with a map that matches nothing: finishes the journal,
    # then refuses the map
    "$VMSNAP_APPLY" t.img changes.img wrong-size.map 2>err.txt && fail "$point: bad map applied"
    grep -q "finished an earlier run" err.txt || fail "$point: the journal was not finished: $(cat err.txt)"
    cmp t.img want.img || fail "$point: the finished run differs from the newer disk"
    [ ! -e t.img.vmsnap-apply-journal ] || fail "$point: journal left after finishing"
done

# a journal cut short (the run was killed while writing it): dropped
cp --sparse=always base.img t.img
VMSNAPFS_FAULT=apply-journal-written "$VMSNAP_APPLY" t.img changes.img changes.map >/dev/null 2>&1 || true
truncate -s -100 t.img.vmsnap-apply-journal
"$VMSNAP_APPLY" t.img changes.img changes.map 2>err.txt >/dev/null || fail "apply after a cut journal"
grep -q "dropped the incomplete journal" err.txt || fail "the cut journal: $(cat err.txt)"
cmp t.img want.img || fail "after a cut journal the result differs"

# the journal of another file is not applied to this one
cp --sparse=always base.img t.img
cp --sparse=always base.img other.img
VMSNAPFS_FAULT=apply-journal-written "$VMSNAP_APPLY" other.img changes.img changes.map >/dev/null 2>&1 || true
mv other.img.vmsnap-apply-journal t.img.vmsnap-apply-journal
set +e
"$VMSNAP_APPLY" t.img changes.img changes.map 2>err.txt
status=$?
set -e
[ "$status" = 2 ] || fail "another file's journal: status $status"
[ "$(sum t.img)" = "$base_sum" ] || fail "another file's journal changed the image"

# the journal lies beside the file, not beside the link that named it: a
# run killed through a link is finished by a run through the file's name
rm -f t.img.vmsnap-apply-journal
cp --sparse=always base.img t.img
ln -sf t.img link.img
VMSNAPFS_FAULT=apply-half "$VMSNAP_APPLY" link.img changes.img changes.map >/dev/null 2>&1 || true
[ -e t.img.vmsnap-apply-journal ] || fail "the journal is not beside the file"
"$VMSNAP_APPLY" t.img changes.img wrong-size.map 2>err.txt && fail "bad map applied after a link"
cmp t.img want.img || fail "the run killed through a link was not finished"

# a journal another user could have written is not applied
cp --sparse=always base.img t.img
VMSNAPFS_FAULT=apply-journal-written "$VMSNAP_APPLY" t.img changes.img changes.map >/dev/null 2>&1 || true
chmod 0666 t.img.vmsnap-apply-journal
set +e
"$VMSNAP_APPLY" t.img changes.img changes.map 2>err.txt
status=$?
set -e
[ "$status" = 2 ] || fail "a journal writable by others: status $status"
grep -q "not a journal vmsnap-apply wrote" err.txt || fail "writable journal: $(cat err.txt)"
[ "$(sum t.img)" = "$base_sum" ] || fail "a journal writable by others changed the image"

# two runs on one image at once: the second is refused
rm -f t.img.vmsnap-apply-journal
cp --sparse=always base.img t.img
exec 9<t.img
flock -x 9
"$VMSNAP_APPLY" t.img changes.img changes.map 2>err.txt && fail "a locked image was applied to"
grep -q "another vmsnap-apply" err.txt || fail "locked: $(cat err.txt)"
exec 9<&-
echo "PASS: $testname"
