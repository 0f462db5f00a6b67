#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS [TARGET...]]: a bounded libFuzzer run of every
# fuzz target (or those named: restore, name, ...), SECONDS in all (60),
# shared evenly. Sets up and builds build-fuzz (clang, -Dfuzzing=true,
# ASan+UBSan) first; $FUZZ_BUILD_DIR names another folder.
#
# Each target starts from a copy of its corpus/ and regressions/ folders
# (the repo's corpus does not grow), with TARGET.dict, or for a target
# A-B without one B.dict, as its dictionary where there is one. A crash,
# leak, timeout or out-of-memory input is copied to regressions/TARGET/
# (the replay tests run it from then on; unless it is there or in the
# corpus already) and shown; the exit status is then 1. One line per
# target says runs, exec/s and coverage.
set -euo pipefail
cd "$(dirname "$0")/../.."

total=${1:-60}
shift || true
build=${FUZZ_BUILD_DIR:-build-fuzz}
here=tests/fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in "$here"/fuzz-*.c; do
        t=${f##*/fuzz-}
        targets+=("${t%.c}")
    done
fi

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" -Dfuzzing=true -Db_sanitize=address,undefined \
        -Db_lundef=false >/dev/null
fi
if ! out=$(ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz-}" 2>&1); then
    tail -n 30 <<<"$out" >&2
    echo "fuzz: the build in $build failed" >&2
    exit 1
fi

export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
each=$((total / ${#targets[@]}))
[ "$each" -ge 1 ] || each=1

status=0
for t in "${targets[@]}"; do
    work=$tmp/$t
    mkdir -p "$work/corpus" "$work/artifacts"
    cp "$here/corpus/$t"/* "$work/corpus/"
    find "$here/regressions/$t" -maxdepth 1 -type f ! -name '.*' \
        -exec cp {} "$work/corpus/" \;
    dict=()
    for d in "$here/$t.dict" "$here/${t##*-}.dict"; do
        if [ -f "$d" ]; then
            dict=("-dict=$d")
            break
        fi
    done
    rc=0
    "$build/tests/fuzz/fuzz-$t" -max_total_time="$each" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1 || rc=$?

    # "#123 DONE cov: 469 ft: 1336 corp: 119/103Kb ..." and stat:: lines
    last=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    found=("$work"/artifacts/*)
    if [ "$rc" = 0 ] && [ ! -e "${found[0]}" ]; then
        echo "fuzz-$t: ok, ${runs:-?} runs in ${each}s (${speed:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
        continue
    fi
    status=1
    echo "fuzz-$t: FAILED (exit $rc) after ${runs:-?} runs:"
    # the report: from the first error line to the sanitizer's SUMMARY
    report=$(sed -n '/check failed\|runtime error\|ERROR:/,/^SUMMARY/p' "$work/log")
    if [ -n "$report" ]; then
        head -n 60 <<<"$report"
    else
        tail -n 30 "$work/log"
    fi
    for a in "${found[@]}"; do
        [ -e "$a" ] || continue
        keep=
        for f in "$here/corpus/$t"/* "$here/regressions/$t"/*; do
            if cmp -s "$a" "$f"; then
                keep=$f
            fi
        done
        if [ -n "$keep" ]; then
            echo "fuzz-$t: the input is $keep ($(stat -c %s "$keep") bytes):"
        else
            keep=$here/regressions/$t/${a##*/}
            cp "$a" "$keep"
            echo "fuzz-$t: input kept as $keep ($(stat -c %s "$keep") bytes):"
        fi
        head -c 512 "$keep" | od -A d -c | head -n 20
    done
done
exit "$status"
