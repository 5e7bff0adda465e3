#!/usr/bin/env bash
# `make run`: the main job.
#   1. installs what it needs (scripts/setup-host.sh);
#   2. builds the host backend and runs its C-API demo (seconds);
#   3. builds (cached) the guest kernel, QEMU with the sharegpu device, the driver and the demo,
#      then boots QEMU (TCG, q35) with two sharegpu devices (g0 coherent, g1 coherent=off) and
#      vgem, with the QEMU monitor reachable, runs the guest demo (export on one device,
#      import on the other, a move with move_notify, a coherency barrier, an eviction forced
#      from the monitor) and, on a terminal, drops to a guest shell
#      (scripts/guest-tests.sh --demo; arguments go to it).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" run
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$ROOT"
bash scripts/setup-host.sh
use_ccache
meson_configure build
nice ninja -C build host-backend/sharegpu-demo
echo "=== host backend demo (C API)"
./build/host-backend/sharegpu-demo
echo
echo "=== guest demo: QEMU with -device sharegpu x2 + the guest kernel and driver"
exec bash scripts/guest-tests.sh --demo "$@"
