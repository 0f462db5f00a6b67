#!/usr/bin/env bash
# vmsnap-rotate.sh: a simulated month of scheduled runs (--now, about every
# 3 hours, with extra runs within an hour, a repeated second and two days
# off) against a plain directory standing in for a VM's (mkdir and rmdir in
# its snapshots/ behave as on the mount for the tool): after every run the
# snapshots left are exactly those a reference written here from the rules
# (Proxmox Backup Server's prune, in Python) keeps, the output names what was
# taken and removed, and names without the prefix pattern (or files, or
# invalid dates) are never touched. --dry-run changes nothing and tells what
# a run would do; no --keep-* keeps everything; a failed snapshot removes
# nothing (exit 1); a removal that fails (ENOTEMPTY here; EBUSY on a real
# mount is kube-rotate.sh) is reported and the rest goes on (exit 3); bad
# arguments exit 2.
. "${0%/*}/lib.sh"
requires python3
: "${VMSNAP_ROTATE:=$srcdir/build/tools/vmsnap-rotate}"
[ -x "$VMSNAP_ROTATE" ] || fail "no vmsnap-rotate at $VMSNAP_ROTATE"

w=$(workdir)
vm=$w/vm
mkdir -p "$vm/snapshots"
cd "$vm/snapshots"
# not the tool's: another prefix, no date, an invalid date, a file
mkdir manual-1 auto-foo other-20260101-000000 auto-20251301-000000 auto-20251231-240000 \
    auto-x-20251225-000000 autox-20251225-000000
touch auto-20251224-000000
echo keep >manual-1/data
# the tool's, from before: monthly and yearly keep some of these
mkdir auto-20251120-000000 auto-20251101-000000 auto-20251015-000000 \
    auto-20240601-000000 auto-20230601-000000 auto-20220601-000000 auto-20210601-000000
cd "$w"
planted="auto-20251224-000000 auto-20251231-240000 auto-20251301-000000 auto-foo auto-x-20251225-000000 autox-20251225-000000 manual-1 other-20260101-000000"

VMSNAP_ROTATE=$VMSNAP_ROTATE python3 - "$vm" "$planted" <<'PY' || fail "the simulated month (above)"
import datetime as dt, os, random, re, subprocess, sys

vm, planted = sys.argv[1], set(sys.argv[2].split())
snapdir = os.path.join(vm, "snapshots")
tool = os.environ["VMSNAP_ROTATE"]
policy = {"last": 3, "hourly": 6, "daily": 7, "weekly": 4, "monthly": 2, "yearly": 2}
args = [a for r, n in policy.items() for a in ("--keep-" + r, str(n))]
UTC = dt.timezone.utc

def when(name):
    """the time in a name of the prefix auto, or None (a reading of the
    rule independent of the tool's: a regex and datetime's own checks)"""
    m = re.fullmatch(r"auto-(\d{4})(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)", name)
    if not m:
        return None
    try:
        t = dt.datetime(*map(int, m.groups()), tzinfo=UTC)
    except ValueError:
        return None
    return t if t.year >= 1970 else None

def period(rule, t):
    # the calendar's own buckets: (ISO year, ISO week) from isocalendar()
    return {"last": t, "hourly": (t.date(), t.hour), "daily": t.date(),
            "weekly": tuple(t.isocalendar())[:2], "monthly": (t.year, t.month),
            "yearly": t.year}[rule]

def reference(names):
    """what the prune rules keep of names, as PBS's documentation tells
    them: newest first; each rule in turn takes, among the snapshots no rule
    has decided, the newest of each of its periods that no kept snapshot
    covers already, until it has N periods; older ones in a period it took
    go; whatever no rule keeps goes."""
    snaps = sorted(names, key=when, reverse=True)
    if not any(policy.values()):
        return set(snaps)
    keep, drop = {}, set()
    for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        if not policy[rule]:
            continue
        covered = {period(rule, when(s)) for s in keep}
        mine = set()
        for s in snaps:
            if s in keep or s in drop:
                continue
            p = period(rule, when(s))
            if p in covered:
                continue
            if p in mine:
                drop.add(s)
            elif len(mine) < policy[rule]:
                mine.add(p)
                keep[s] = rule
            else:
                break
    return set(keep)

def listing():
    return set(os.listdir(snapdir))

# the runs: every 3 hours for 31 days, a few minutes late each time; every
# other day a second run within the same hour; one second run in the same
# second; the machine off for two days
rnd = random.Random(7)
start = dt.datetime(2025, 12, 20, 1, 0, 0, tzinfo=UTC)
runs = []
for i in range(31 * 8):
    t = start + dt.timedelta(hours=3 * i, minutes=rnd.randrange(0, 50), seconds=rnd.randrange(60))
    if dt.datetime(2026, 1, 8, tzinfo=UTC) <= t < dt.datetime(2026, 1, 10, tzinfo=UTC):
        continue
    runs.append(t)
    if i % 16 == 5:
        runs.append(t + dt.timedelta(minutes=7))
    if i == 40:
        runs.append(t)      # the same second again: EEXIST, it counts as taken

ours = {n for n in listing() if when(n)} - planted
before_planted = {n: os.stat(os.path.join(snapdir, n)).st_ino for n in planted}
errors = 0
for t in runs:
    now = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    name = t.strftime("auto-%Y%m%d-%H%M%S")
    p = subprocess.run([tool, vm, "--now", now] + args, capture_output=True, text=True)
    out = p.stdout.splitlines()
    if p.returncode != 0 or p.stderr:
        sys.exit(f"{now}: exit {p.returncode}, stderr {p.stderr!r}")
    want = reference(ours | {name})
    got = {n for n in listing() if n not in planted}
    if got != want:
        sys.exit(f"{now}: left {sorted(got)}\nwanted {sorted(want)}\n"
                 f"extra {sorted(got - want)} missing {sorted(want - got)}")
    existed = name in ours
    first = f"snapshot {name} exists already" if existed else f"snapshot {name}"
    if out[0] != first:
        sys.exit(f"{now}: first line {out[0]!r}, wanted {first!r}")
    removed = {l.split()[1] for l in out if l.startswith("removed ")}
    if removed != (ours | {name}) - want:
        sys.exit(f"{now}: said removed {sorted(removed)}, removed {sorted((ours | {name}) - want)}")
    took = name + (" (it existed)" if existed else "")
    summary = (f"vmsnap-rotate: {vm}: took {took}, kept {len(want)}, "
               f"removed {len(removed)}, busy 0")
    if out[-1] != summary:
        sys.exit(f"{now}: summary {out[-1]!r}, wanted {summary!r}")
    if len(out) != 2 + len(removed):
        sys.exit(f"{now}: unexpected lines: {out}")
    ours = want

for n, ino in before_planted.items():
    path = os.path.join(snapdir, n)
    if not os.path.lexists(path) or os.stat(path).st_ino != ino:
        sys.exit(f"{n} was touched")
with open(os.path.join(snapdir, "manual-1", "data")) as f:
    assert f.read() == "keep\n"
print(f"{len(runs)} runs; left: {' '.join(sorted(ours))}")
# the old ones at the end: weekly reaches 2025-11-20 (its 4th week),
# monthly 2025-10 and 2024-06 (the months after are covered), yearly 2023
# and 2022 (2026 to 2024 are covered); 2025-11-01 went (its month and year
# are covered), and 2021 (a third year)
old = {n for n in ours if n < "auto-2025120"}
assert old == {"auto-20251120-000000", "auto-20251015-000000", "auto-20240601-000000",
               "auto-20230601-000000", "auto-20220601-000000"}, sorted(old)
assert len(ours) > 15, ours
PY

ls_all() { (cd "$vm/snapshots" && ls -a --full-time -i); }
# the tool's snapshots (of the prefix auto): the planted look-alikes left out
ours_ls() {
    (cd "$vm/snapshots" && ls -d auto-2???????-??????) |
        grep -vxE 'auto-20251224-000000|auto-20251231-240000|auto-20251301-000000' | sort
}
run() { "$VMSNAP_ROTATE" "$@"; }

# --dry-run: changes nothing, tells what a run would do
before=$(ls_all)
out=$(run --dry-run "$vm" --now 2026-02-25T12:00:00Z --keep-last 2 --keep-daily 2) ||
    fail "dry run: exit $?"
[ "$(ls_all)" = "$before" ] || fail "--dry-run changed the directory"
grep -qx "would snapshot auto-20260225-120000" <<<"$out" || fail "dry run: $out"
grep -qx "kept auto-20260225-120000 (last)" <<<"$out" || fail "dry run, the new one: $out"
[ "$(grep -c '^kept ' <<<"$out")" = 4 ] || fail "dry run keeps 4: $out"
n_ours=$(ours_ls | wc -l)
[ "$(grep -c '^would remove ' <<<"$out")" = $((n_ours + 1 - 4)) ] || fail "dry run removes: $out"
tail -n 1 <<<"$out" | grep -qx "vmsnap-rotate: $vm: dry run: would take auto-20260225-120000, keep 4, remove $((n_ours - 3))" ||
    fail "dry run summary: $(tail -n 1 <<<"$out")"
# the same from the environment; the option wins over it
out=$(VMSNAP_ROTATE_NOW=2026-02-26T00:00:00Z run -n "$vm" --keep-last 1) || fail "dry run (env): exit $?"
grep -qx "would snapshot auto-20260226-000000" <<<"$out" || fail "VMSNAP_ROTATE_NOW: $out"
out=$(VMSNAP_ROTATE_NOW=2026-02-26T00:00:00Z run -n "$vm" --keep-last 1 --now 2026-02-27T00:00:00Z) ||
    fail "dry run (env, --now): exit $?"
grep -qx "would snapshot auto-20260227-000000" <<<"$out" || fail "--now loses to the environment: $out"
out=$(run -n --no-snapshot "$vm" --keep-last 1 --now 2026-02-27T00:00:00Z) || fail "--no-snapshot: exit $?"
grep -q "^would snapshot" <<<"$out" && fail "--no-snapshot would snapshot: $out"
grep -q "would take none, keep 1" <<<"$out" || fail "--no-snapshot: $out"
[ "$(ls_all)" = "$before" ] || fail "a dry run changed the directory"

# no --keep-* option: every snapshot is kept, and it says so
out=$(run "$vm" --now 2026-02-25T13:00:00Z) || fail "no rules: exit $?"
grep -qx "no --keep-\* option: every snapshot is kept" <<<"$out" || fail "no rules: $out"
grep -q "removed 0, busy 0$" <<<"$out" || fail "no rules removed some: $out"
[ -d "$vm/snapshots/auto-20260225-130000" ] || fail "no rules: no snapshot"

# a snapshot that cannot be taken (a file has its name): nothing removed, exit 1
touch "$vm/snapshots/auto-20260225-140000"
before=$(ls_all)
status=0
out=$(run "$vm" --now 2026-02-25T14:00:00Z --keep-last 1 2>"$w/err") || status=$?
[ "$status" = 1 ] || fail "a failed snapshot: exit $status"
grep -q "mkdir .*auto-20260225-140000: File exists" "$w/err" || fail "the reason: $(cat "$w/err")"
grep -q "nothing removed" <<<"$out" || fail "failed snapshot summary: $out"
[ "$(ls_all)" = "$before" ] || fail "a failed snapshot removed something"
rm "$vm/snapshots/auto-20260225-140000"

# a removal that fails (not empty here): reported, the others go, exit 3
echo x >"$vm/snapshots/auto-20260225-130000/file"
status=0
out=$(run "$vm" --now 2026-02-25T15:00:00Z --keep-last 1 2>"$w/err") || status=$?
[ "$status" = 3 ] || fail "a failed removal: exit $status ($out)"
grep -q "rmdir .*auto-20260225-130000: Directory not empty" "$w/err" || fail "the reason: $(cat "$w/err")"
left=$(ours_ls | tr '\n' ' ')
[ "$left" = "auto-20260225-130000 auto-20260225-150000 " ] || fail "after a failed removal: $left"
tail -n 1 <<<"$out" | grep -q "took auto-20260225-150000, kept 1, removed [1-9][0-9]*, busy 0, failed 1$" ||
    fail "summary: $(tail -n 1 <<<"$out")"
for n in $planted; do [ -e "$vm/snapshots/$n" ] || fail "$n was removed"; done

# bad arguments: exit 2, a reason, nothing done
before=$(ls_all)
bad() {
    local status=0
    run "$@" >/dev/null 2>"$w/err" || status=$?
    [ "$status" = 2 ] || fail "$*: exit $status, wanted 2"
    [ -s "$w/err" ] || fail "$*: no reason given"
}
bad
bad "$vm" "$vm"
bad "$vm" --keep-last -1
bad "$vm" --keep-daily x
bad "$vm" --keep-daily ''
bad "$vm" --keep-weekly 99999999999999999999
bad "$vm" --now 2026-02-30T00:00:00Z
bad "$vm" --now '2026-01-01 00:00:00'
bad "$vm" --prefix ../x
bad "$vm" --prefix ''
bad "$vm" --bogus
bad "$w/none"
bad "$w"               # no snapshots/ in it
VMSNAP_ROTATE_NOW=yesterday bad "$vm"
[ "$(ls_all)" = "$before" ] || fail "bad arguments changed the directory"
grep -q "not a count" <(run "$vm" --keep-last -1 2>&1) || fail "no reason for a negative count"
grep -q "snapshots" <(run "$w" 2>&1) || fail "no reason for a VMDIR without snapshots/"

# another prefix: its own set, ours untouched
out=$(run "$vm" --prefix nightly --now 2026-02-26T02:00:00Z --keep-last 1) || fail "--prefix: exit $?"
grep -q "took nightly-20260226-020000, kept 1, removed 0, busy 0$" <<<"$out" || fail "--prefix: $out"
[ -d "$vm/snapshots/auto-20260225-150000" ] || fail "--prefix removed another prefix's"
echo "PASS: $testname"
