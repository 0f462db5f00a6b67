#!/usr/bin/env bash
# tools/install-deps.sh: installs what vmsnapfs needs to build, run and be
# tested on Debian 12, as root. Does nothing when all is installed already.
set -euo pipefail

packages=(
    # build
    build-essential meson ninja-build pkg-config scdoc
    libfuse3-dev libvirt-dev libxml2-dev libjson-c-dev libcmocka-dev libnbd-dev
    libyaml-dev libcurl4-openssl-dev libssl-dev
    # run
    fuse3 libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    # the test and demo guest, built from Debian packages (tests/guest/)
    linux-image-amd64 busybox-static qemu-guest-agent e2fsprogs cpio kmod
    # tests; tests/fuzz: clang, its libFuzzer and sanitizer runtimes
    # (libclang-rt-14-dev, only recommended by clang), llvm-symbolizer (llvm)
    man-db procps util-linux python3 clang libclang-rt-14-dev llvm
    # systemd-analyze verify and systemd-escape check the units (no systemd runs)
    systemd
    # the fake Kubernetes API server (tests/kube) and what checks it;
    # nghttpx puts HTTP/2 in front of it (the fake speaks HTTP/1.1)
    openssl curl nghttp2-proxy
)
# kubectl checks the fake API server: a kubectl already installed (any
# packaging) serves, else Debian's kubernetes-client
if ! command -v kubectl >/dev/null 2>&1; then
    packages+=(kubernetes-client)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages (run as root): ${missing[*]}" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
