#!/usr/bin/env bash
# tests/run.sh: every test, on a fresh Debian 12 machine as root: installs
# what is needed, builds twice (plain, and with ASan+UBSan), starts libvirt,
# and runs the unit and integration tests against both builds, then the
# fuzz targets under libFuzzer for a minute (tests/fuzz/run.sh).
#
# VMSNAPFS_REQUIRE_ALL=1 (set by CI) turns skipped tests into failures, so a
# missing dependency cannot pass unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
tools/build.sh build
tools/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false
tools/start-libvirt.sh

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

status=0
passed=0 failed=0 skipped=0
for dir in build build-asan; do
    echo "== tests: $dir"
    meson test -C "$dir" --print-errorlogs || status=1
    log=$dir/meson-logs/testlog.json
    p=$(grep -c '"result": "OK"' "$log" || true)
    f=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)
    s=$(grep -c '"result": "SKIP"' "$log" || true)
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done

# the fuzz targets under libFuzzer for a minute: one test
echo "== tests: fuzz"
if tests/fuzz/run.sh 60; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)) status=1
fi

if [ "${VMSNAPFS_REQUIRE_ALL:-0}" = 1 ] && [ "$skipped" != 0 ]; then
    echo "tests: $skipped skipped, but every test must run here" >&2
    status=1
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
