#!/usr/bin/env bash
# `make run`: the main job.
#   1. installs what it needs (scripts/setup-host.sh);
#   2. builds the host backend and runs its C-API demo (seconds);
#   3. builds (cached) the guest kernel, QEMU with the sharegpu device, the driver and the demo,
#      then boots QEMU (TCG, q35) with two sharegpu devices (g0 coherent, g1 coherent=off) and
#      vgem, with the QEMU monitor reachable, runs the guest demo (export on one device,
#      import on the other, a move with move_notify, a coherency barrier, an eviction forced
#      from the monitor) and, on a terminal, drops to a guest shell
#      (scripts/guest-tests.sh --demo; arguments go to it);
#   4. the two-VM demo (scripts/guest-multivm.sh --demo): the host's sharegpu-broker and two
#      guests, vm-a exporting a buffer and granting it to vm-b, vm-b importing it with zero
#      copy, vm-a's QEMU monitor moving it (vm-b invalidated, re-reads intact data) and
#      printing `info sharegpu-broker`, then vm-a's QEMU killed (vm-b's imports revoked:
#      -ENODEV). On a terminal it runs before step 3, whose guest shell ends `make run`.
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
two_vm_demo() {
    echo
    echo "=== two-VM demo: sharegpu-broker + two QEMUs, vm-a exports, vm-b imports"
    bash scripts/guest-multivm.sh --demo
}
single_vm_demo() {
    echo "=== guest demo: QEMU with -device sharegpu x2 + the guest kernel and driver"
    bash scripts/guest-tests.sh --demo "$@"
}
if [ -t 0 ] && [ -t 1 ]; then
    # the single-VM demo ends in a guest shell: the two-VM demo comes first
    two_vm_demo
    echo
    single_vm_demo "$@"
else
    single_vm_demo "$@"
    two_vm_demo
fi
