#!/usr/bin/env bash
# fault-trials.sh: a few seeded random fault trials of bench/faults.sh (the
# adversarial campaign kept in the test command): SIGKILL at a crash point
# or at a random instant, or a libvirtd restart, during mkdir, rmdir,
# restore or clone; then nothing frozen, every VM in its promised state,
# every snapshot's content unchanged, images clean, no stray file, no job
# left. The seed is printed (FAULT_SEED=S replays it, FAULT_SEED=random
# draws one); bench/faults.sh N runs many.
. "${0%/*}/lib.sh"
requires_fuse
use_guests

# a fixed seed by default, so that the test command is repeatable;
# FAULT_SEED=random draws one (bench/faults.sh N draws one too)
seed=${FAULT_SEED:-1}
[ "$seed" = random ] && seed=$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')
echo "fault-trials: seed=$seed (FAULT_SEED=$seed replays these trials)"
out=$(workdir)/faults.out
VMSNAPFS="$VMSNAPFS" "$srcdir/bench/faults.sh" "${FAULT_TRIALS:-3}" "$seed" 2>&1 | tee "$out" ||
    fail "fault trials with seed $seed found problems (see above)"
grep -q "^faults: .*: 0 frozen, 0 wrong state, 0 changed snapshots, 0 broken images, 0 stray files, 0 jobs left$" "$out" ||
    fail "no clean summary for seed $seed"
echo "PASS: $testname"
