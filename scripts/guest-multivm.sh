#!/usr/bin/env bash
# sharegpu sharing between VMs, end to end: the host broker and three guests (issue 12).
#
# usage: scripts/guest-multivm.sh [options]
#   --no-build         use the cached kernel and QEMU (the module, the test binaries, the
#                      broker and the image are still made, that is cheap)
#   --timeout SECS     failure detector for each guest run (default 1500; --demo: 600)
#   --log-dir DIR      where the console logs go (default $SHAREGPU_CACHE/logs)
#   --demo             the two-VM demo of `make run` instead of the test stage (below)
#
# Steps: scripts/guest-tests.sh --build-only (kernel, QEMU, driver module, test binaries;
# cached), the broker daemon (meson, build/host-backend/broker/sharegpu-broker),
# scripts/build-guest-image.sh (the driver, guest-tests/sgpu_multivm_test and its hold step
# sgpu_multivm_hold), then:
#   sharegpu-broker --socket RUN/broker.sock --max-exports 8   (waited for: "ready on")
#   vm-a: -object sharegpu-broker,id=b0,path=RUN/broker.sock,vm-name=vm-a
#         -device sharegpu,id=g0,broker=b0,coherent=off  (strict caches: the barriers across
#         VMs are tested; and g1 without a broker), sgputest.role=a
#   vm-b: the same with vm-name=vm-b, sgputest.role=b (the importer)
#   vm-c: the same with vm-name=vm-c, sgputest.role=c (granted one buffer, refused the others)
# booted at the same time by scripts/run-guest.sh (TCG, 1 vCPU, 512 MiB each), each with its
# host agent (guest-tests/host-agent.py --mailbox RUN/mailbox): the guests pass the broker
# ids and every "done" through the mailbox and wait for each other's explicit messages
# (guest-tests/sgpu_multivm_test.cc lists them); at the end, while vm-c imports a buffer of
# vm-b's, vm-b has the agent kill -9 the broker and start it again (restart-broker): vm-b's
# export is lost and made again, vm-c's import is revoked and made again, both keep their own
# buffers; a failed step or a QEMU gone unasked ends
# the other guest's waits at once (the agents put "abort"). vm-b has the host kill -9 vm-a's QEMU
# (agent request kill-vm, QEMU's -pidfile) and counts the broker's and its own QEMU's descriptors (vm-c its QEMU's)
# (/proc/PID/fd) before and after.
#
# Output: every case of every guest ("PASS|FAIL|SKIP vm-X <binary> <Suite.Test>"), and as
# the LAST line
#   guest-multivm: N passed, M failed, K skipped
# A vm-a that was not killed by vm-b's request (run-guest.sh exit 5 with the agent's record),
# a vm-b or vm-c whose run-guest.sh did not pass, or a kernel report in any log (lockdep,
# KASAN, WARN, oops, ...) is one more failure each.
#
# Demo mode (--demo, `make run`): the broker and two guests only, vm-a exporting and vm-b
# importing, running the cases of the same binary that make the story (vm-a: export with a
# grant to vm-b, a write, the read-only grant, the monitor's move, the hold; vm-b: the
# zero-copy import with bytes-copied unchanged, the write seen, the read-only grant, vm-c's
# buffer refused, the invalidation and re-read, the revocation by kill -9 of vm-a with
# -ENODEV, the broker's descriptors), with sgputest.demo=1 (vm-a has the host print its
# QEMU monitor's `info sharegpu-broker`). vm-c's "c-ready" is put in the mailbox up front.
# While the guests run, their "SHAREGPU-DEMO:" console lines and the monitor's output are
# shown as they come (stdout); the closing line is "two-vm-demo: N passed, M failed".
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" guest-multivm

OUT=${SHAREGPU_GUEST_OUT:-$CACHE/guest-tests}  # binaries and images (another checkout's run: its own)
BUILD=1 TIMEOUT="" LOGDIR=$CACHE/logs DEMO=0
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --demo) DEMO=1 SG_TAG=two-vm-demo; shift ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --log-dir) LOGDIR=$2; shift 2 ;;
        *) other_arg "$1" ;;
    esac
done
[ -n "$TIMEOUT" ] || TIMEOUT=$([ "$DEMO" = 1 ] && echo 600 || echo 1500)
mkdir -p "$OUT" "$LOGDIR"
STAMP=$(date +%Y%m%d-%H%M%S)-$$

# ---- builds ------------------------------------------------------------------------------
GT=(--build-only)
[ "$BUILD" = 1 ] || GT+=(--no-build)
SHAREGPU_GUEST_OUT=$OUT bash "$ROOT/scripts/guest-tests.sh" "${GT[@]}" >&2 ||
    give_up "build failed (scripts/guest-tests.sh --build-only)"
load_kernel_env || give_up "no cached kernel (scripts/build-guest-kernel.sh)"
find_qemu || give_up "no QEMU at $QEMU"
say "broker daemon (meson, build/)"
build_broker || give_up "broker build failed"
IMG=$OUT/multivm.cpio.gz
"$ROOT/scripts/build-guest-image.sh" --out "$IMG" --module "$ROOT/guest-driver/sharegpu.ko" \
    --test "$OUT/build/sgpu_multivm_test" --test "$OUT/build/sgpu_multivm_hold" >&2 ||
    give_up "image build failed"

# ---- the broker --------------------------------------------------------------------------
make_run_dir multivm
MB=$RUN/mailbox
VMS=(vm-a vm-b vm-c)
declare -A FILTERS=([vm-a]='MultiVmA.*' [vm-b]='MultiVmB.*' [vm-c]='MultiVmC.*')
# the broker's exports per VM: MultiVmA.ExportOverTheBrokerLimitIsLostAfterTheIoctl goes one
# over (the guests learn it from the kernel command line); the other cases stay well below
MAX_EXPORTS=8
APPEND=" sgputest.broker_max_exports=$MAX_EXPORTS"
exec 3>&2  # the host agents' messages
if [ "$DEMO" = 1 ]; then
    VMS=(vm-a vm-b)
    FILTERS[vm-a]='MultiVmA.*-MultiVmA.BadInput:MultiVmA.WithdrawAndUnexport'
    FILTERS[vm-a]+=':MultiVmA.ExportOverTheBrokerLimitIsLostAfterTheIoctl'
    FILTERS[vm-b]='MultiVmB.*-MultiVmB.BrokerRestartKeepsLocalBuffers'
    APPEND+=" sgputest.demo=1"
    exec 3>"$RUN/agents.log"  # only the monitor's output is shown, as it comes
    DEMO_START=$SECONDS
    echo "--- two VMs share a buffer through the host's sharegpu-broker (docs/broker.md)"
    echo "  host: sharegpu-broker --socket $RUN/broker.sock"
fi
mkdir -p "$MB" "${VMS[@]/#/$RUN/}"
start_broker "$RUN/broker.sock" "$RUN/broker.log" --max-exports "$MAX_EXPORTS" ||
    give_up "no broker"
echo "$BROKER_PID" >"$MB/broker.pid"
# the agents' restart-broker (vm-b's last test) starts the next one the same way
printf '%s\n' "$BROKER" --socket "$RUN/broker.sock" --max-exports "$MAX_EXPORTS" \
    >"$MB/broker.argv"
echo "$RUN/broker.log" >"$MB/broker.logpath"
at_exit "kill \$(cat $(printf %q "$MB/broker.pid")) 2>/dev/null"
say "$(cat "$RUN/broker.log")"
# the demo has no vm-c: vm-b's first case waits for vm-c's message (the test's order)
[ "$DEMO" = 0 ] || echo "no vm-c in the demo" >"$MB/c-ready"

# ---- the guests --------------------------------------------------------------------------
declare -A LOGS PIDS RCS
for vm in "${VMS[@]}"; do
    role=${vm#vm-}
    LOGS[$vm]=$LOGDIR/guest-multivm-$role-$STAMP.log
    rm -f "${LOGS[$vm]}"
    # the demo follows it from the start (tail -F follows an existing file through inotify,
    # a missing one only by polling it every second, which scrambles the two guests' lines)
    [ "$DEMO" = 0 ] || : >"${LOGS[$vm]}"
    G0_PROPS=",broker=b0,coherent=off" guest_qemu_args 64M "$RUN/$vm"
    start_host_agent "$RUN/$vm" "${LOGS[$vm]}" --mailbox "$MB" --vm-name "$vm" 2>&3
    say "booting $vm (log ${LOGS[$vm]})"
    [ "$DEMO" = 0 ] || echo "  host: qemu-system-x86_64 ... -name $vm" \
        "-object sharegpu-broker,id=b0,path=$RUN/broker.sock,vm-name=$vm" \
        "-device sharegpu,id=g0,broker=b0,coherent=off ...  ($([ "$vm" = vm-a ] && echo exporter || echo importer))"
    "$ROOT/scripts/run-guest.sh" --kernel "$SHAREGPU_KERNEL_IMAGE" --initrd "$IMG" \
        --log "${LOGS[$vm]}" --smp 1 --mem 512M --timeout "$TIMEOUT" --silence 600 \
        --append "sgputest.host=1 sgputest.role=$role sgputest.filter=${FILTERS[$vm]}$APPEND" -- \
        -name "$vm" -pidfile "$MB/$vm.pid" \
        -object "sharegpu-broker,id=b0,path=$RUN/broker.sock,vm-name=$vm" "${QEMU_ARGS[@]}" \
        >/dev/null 2>"$RUN/$vm.err" &
    PIDS[$vm]=$!
done
FOLLOWERS=()
if [ "$DEMO" = 1 ]; then
    # the story as it happens: each guest's SHAREGPU-DEMO lines and the monitor's output
    # (the host agent's "[host-agent]   " lines); tail ends once that guest's runner has
    for vm in "${VMS[@]}"; do
        tail -n +1 -F --pid="${PIDS[$vm]}" "${LOGS[$vm]}" 2>/dev/null |
            sed -un 's/\r//g; s/^.*SHAREGPU-DEMO: /  /p' &
        FOLLOWERS+=($!)
    done
    tail -n +1 -F --pid="${PIDS[vm-b]}" "$RUN/agents.log" 2>/dev/null |
        sed -un 's/^\[host-agent\]   /    | /p' &
    FOLLOWERS+=($!)
fi
for vm in "${VMS[@]}"; do
    wait "${PIDS[$vm]}"
    RCS[$vm]=$?
done
[ "${#FOLLOWERS[@]}" = 0 ] || wait "${FOLLOWERS[@]}"

# ---- verdict -----------------------------------------------------------------------------
PASSED=0 FAILED=0 SKIPPED=0
for vm in "${VMS[@]}"; do
    # run-guest.sh's messages; the demo shows them only when that guest did not end as
    # planned (vm-a: killed at vm-b's request, which run-guest.sh calls a failure)
    planned=$([ "$vm" = vm-a ] && echo 5 || echo 0)
    [ "$DEMO" = 1 ] && [ "${RCS[$vm]}" = "$planned" ] && ! grep -q 'KERNEL REPORT' "$RUN/$vm.err" ||
        sed "s/^/[$vm] /" "$RUN/$vm.err" >&2
    tr -d '\r' <"${LOGS[$vm]}" | sed -n "s/^.*SHAREGPU-GTEST: \(PASS\|FAIL\|SKIP\) \([^ ]*\) \([^ ]*\).*/\1 $vm \2 \3/p" |
        sed "s/^/[$SG_TAG]   /" >&2
    read -r p f s <<<"$(gtest_counts "${LOGS[$vm]}" sgpu_multivm_test 2>"$RUN/$vm.cases")"
    sed "s/^/[$SG_TAG]   $vm: /" "$RUN/$vm.cases" >&2
    PASSED=$((PASSED + ${p:-0})) FAILED=$((FAILED + ${f:-1})) SKIPPED=$((SKIPPED + ${s:-0}))
done
# vm-a's run ends in its kill: run-guest.sh's kernel-report verdict is only in its messages
# (vm-b's and vm-c's are in their exit status, below)
if grep -q 'KERNEL REPORT' "$RUN/vm-a.err"; then
    say "FAIL vm-a: kernel report in ${LOGS[vm-a]}"
    FAILED=$((FAILED + 1))
fi
# vm-a ends killed by vm-b's request (run-guest.sh: QEMU killed by a signal, exit 5)
if [ "${RCS[vm-a]}" = 5 ] && [ -f "$MB/vm-a.killed" ]; then
    say "vm-a: killed by vm-b's request as planned$([ "$DEMO" = 1 ] || echo " (run-guest.sh's 'QEMU exited abnormally' above)")"
else
    say "FAIL vm-a: expected to be killed by vm-b's request, run-guest.sh exit ${RCS[vm-a]}" \
        "$([ -f "$MB/vm-a.killed" ] && echo "(killed)" || echo "(never killed)")"
    FAILED=$((FAILED + 1))
fi
for vm in "${VMS[@]:1}"; do
    if [ "${RCS[$vm]}" != 0 ]; then
        say "FAIL $vm: run-guest.sh exit ${RCS[$vm]} (see ${LOGS[$vm]})"
        FAILED=$((FAILED + 1))
    fi
done
say "broker log:"
sed "s/^/[$SG_TAG]   /" "$RUN/broker.log" >&2
say "logs: ${LOGS[*]}"
if [ "$DEMO" = 1 ]; then
    [ "$FAILED" = 0 ] || { say "host agents:"; sed "s/^/[$SG_TAG]   /" "$RUN/agents.log" >&2; }
    say "the two-VM demo took $((SECONDS - DEMO_START)) s (from the broker's start)"
fi
verdict "$PASSED" "$FAILED" "$SKIPPED"
