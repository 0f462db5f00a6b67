#!/usr/bin/env bash
# tools/build.sh [BUILDDIR [MESON-OPTIONS...]]: configures (once) and builds.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null
fi
ninja -C "$dir" >/dev/null
