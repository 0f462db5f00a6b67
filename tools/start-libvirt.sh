#!/usr/bin/env bash
# tools/start-libvirt.sh: makes sure libvirtd answers on qemu:///system,
# starting virtlogd and libvirtd by hand where no init system does (as root).
set -euo pipefail
# shellcheck source=../tests/guest/guest.sh
. "$(dirname "$0")/../tests/guest/guest.sh"
libvirt_ensure_running
