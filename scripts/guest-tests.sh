#!/usr/bin/env bash
# sharegpu guest end-to-end tests: ONE command from sources to a verdict; and the guest demo.
#
# usage: scripts/guest-tests.sh [options] [-- extra qemu args]
#   --no-build         do not run the kernel/QEMU build scripts (use the cached outputs; the
#                      module and the guest binaries are still made, that is cheap)
#   --filter PATTERN   GoogleTest filter for every binary (e.g. 'Sharing*:*Negative*')
#   --timeout SECS     failure detector for the whole guest run (default 2400; --demo: 900,
#                      and none on a terminal)
#   --log FILE         serial console log (default $SHAREGPU_CACHE/logs/guest-tests-<time>.log,
#                      --demo: guest-demo-<time>.log)
#   --no-host-agent    do not start the QMP host agent (host-request tests then SKIP)
#   --append "ARGS"    extra guest kernel command line, e.g. for the torture test's soak:
#                      --filter 'Torture*' --append 'sgputest.torture_seconds=1800'
#                      (sgputest.torture_seed=N reruns one seed)
#   --build-only       stop after building kernel, QEMU, module and test binaries (used by
#                      scripts/guest-fuzz.sh); binaries in $SHAREGPU_CACHE/guest-tests/build
#   --demo             the guest demo instead of the tests (`make run`, see below)
#   --profile REPORT   the guest kernel's profile by function, sampled through the monitor
#                      (scripts/run-guest.sh --profile, scripts/guest-profile.py)
#   --coherency-check on|off
#                      the coherency-violation detector on g1 (default on; the coherency
#                      tests then assert its counters from the host, docs/user-guide.md);
#                      off runs the same tests without it (sgputest.coherency_check=off tells
#                      them), e.g. to measure its overhead (docs/performance.md)
#
# Steps (each cached / incremental): scripts/build-guest-kernel.sh, scripts/build-qemu.sh
# (each waits, through its own flock, for a build of its kind that is running), make -C
# guest-driver (module), make -C guest-tests (static GoogleTest binaries),
# scripts/build-guest-image.sh, then scripts/run-guest.sh boots QEMU (TCG, -M q35) with
#   -device sharegpu,id=g0                 coherent,     64 MiB VRAM
#   -device sharegpu,id=g1,coherent=off,check-coherency=on   non-coherent, 64 MiB VRAM
# plus -device virtio-gpu-pci and vgem (both drivers built into the guest kernel; the
# standard-uAPI table compares the three), the test-only module guest-tests/importer (a
# lazily unmapping dynamic dma-buf importer, /dev/sgpu_test_importer), a QMP socket and a
# second serial port for the host agent (guest-tests/host-agent.py: the guest prints
# "SHAREGPU-HOST-REQUEST: ..." on the console, the agent runs QMP x-sharegpu-move-bo and acks
# on the guest's /dev/ttyS1).
#
# The guest benchmarks (sgpu_bench_test) print `ratio NAME VALUE` lines, shown here.
# Output: per-case results parsed from the console ("SHAREGPU-GTEST: PASS|FAIL|SKIP <bin>
# <Suite.Test>"), a failure list, and as the LAST line
#   guest-tests: N passed, M failed
# (N/M = GoogleTest cases; a binary that crashes or exits non-zero without reporting a failed
# case counts as one failed case). Exit status non-zero when M > 0, when the guest did not
# finish, or when run-guest.sh found a kernel report (lockdep, KASAN, WARN, oops, ...).
#
# Demo mode (--demo): the same guest, with the HMP monitor on a unix socket too, runs
# guest-tests/sgpu_demo.cc instead of the tests (export on one device, import on the other, a
# move with move_notify, a coherency barrier, an eviction forced from the QEMU monitor); the
# test binaries ride along in /usr/bin (e.g. sgpu_sharing_test --gtest_filter='*Vgem*').
# Interactive (stdin and stdout are a terminal): console on the terminal, a guest shell after
# the demo (exit it to power off). The HMP monitor listens on a unix socket printed at start:
#     socat - UNIX-CONNECT:/tmp/sgpu-demo.XXXX/hmp.sock     then: info sharegpu
#     x_sharegpu_move_bo g0 <hw-handle> system;  or Ctrl-A c on the console (mux monitor)
# Non-interactive (CI, no TTY): the guest powers off after the demo; the exit status is
# scripts/run-guest.sh's (0 = everything behaved).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" guest-tests

OUT=${SHAREGPU_GUEST_OUT:-$CACHE/guest-tests}  # binaries and images (another checkout's run: its own)
BUILD=1 FILTER="" TIMEOUT="" LOG="" AGENT=1 BUILD_ONLY=0 DEMO=0 APPEND="" CHECK_COHERENCY=on
PROFILE=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --filter) FILTER=$2; shift 2 ;;
        --append) APPEND=$2; shift 2 ;;
        --profile) PROFILE=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --no-host-agent) AGENT=0; shift ;;
        --build-only) BUILD_ONLY=1; shift ;;
        --demo) DEMO=1; shift ;;
        --coherency-check)
            case "${2:-}" in on|off) CHECK_COHERENCY=$2 ;; *) give_up "--coherency-check on|off" ;; esac
            shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) other_arg "$1" ;;
    esac
done
NAME=guest-tests
if [ "$DEMO" = 1 ]; then NAME=guest-demo SG_TAG=guest-demo; fi
mkdir -p "$OUT" "$CACHE/logs"
[ -n "$LOG" ] || LOG=$CACHE/logs/$NAME-$(date +%Y%m%d-%H%M%S)-$$.log

# ---- builds ------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    say "guest kernel (cached)"
    KENV=$("$ROOT/scripts/build-guest-kernel.sh") || give_up "kernel build failed"
    eval "$KENV"
    say "QEMU (cached)"
    BUILT=$(nice -n 10 "$ROOT/scripts/build-qemu.sh" | tail -n 1) || give_up "QEMU build failed"
    QEMU=${QEMU:-$BUILT}
else
    load_kernel_env || give_up "--no-build: no cached kernel (scripts/build-guest-kernel.sh)"
fi
KDIR=${SHAREGPU_KERNEL_BUILD:?}
find_qemu || give_up "no QEMU at $QEMU"

say "driver module (KDIR=$KDIR)"
nice -n 10 make -C "$ROOT/guest-driver" KDIR="$KDIR" modules >&2 || give_up "driver build failed"
say "test importer module (guest-tests/importer: a lazily unmapping dynamic dma-buf importer)"
nice -n 10 make -C "$ROOT/guest-tests/importer" KDIR="$KDIR" modules >&2 ||
    give_up "test importer build failed"
say "test binaries"
# $OUT/build is shared by checkouts: objects another checkout built may be newer than this
# checkout's edited sources, so make's timestamps would keep them. Built last from another
# checkout: everything is rebuilt (-B; ccache makes that cheap).
STAMP=$OUT/build/.checkout
REBUILD=()
[ "$(cat "$STAMP" 2>/dev/null)" = "$ROOT" ] || REBUILD=(-B)
nice -n 10 make -C "$ROOT/guest-tests" -j2 ${REBUILD[@]+"${REBUILD[@]}"} KDIR="$KDIR" \
    O="$OUT/build" >&2 || give_up "test build failed"
echo "$ROOT" >"$STAMP"
[ "$BUILD_ONLY" = 1 ] && { say "built: $OUT/build"; exit 0; }

TESTS=(sgpu_negative_test sgpu_coherency_test sgpu_sharing_test sgpu_invalidation_test
       sgpu_locking_test sgpu_async_test sgpu_torture_test sgpu_scale_test sgpu_uapi_test
       sgpu_bench_test)
IMG_ARGS=(--module "$ROOT/guest-driver/sharegpu.ko"
          --module "$ROOT/guest-tests/importer/sgpu_test_importer.ko")
if [ "$DEMO" = 1 ]; then
    IMG=$OUT/demo.cpio.gz
    IMG_ARGS+=(--init-mode demo --test "$OUT/build/sgpu_demo")
    for t in "$OUT"/build/sgpu_*_test; do IMG_ARGS+=(--file "$t:/usr/bin/$(basename "$t")"); done
else
    IMG=$OUT/initrd.cpio.gz
    cat >"$OUT/zz-debugfs.sh" <<'EOS'
#!/bin/sh
# diagnostics after the tests: driver counters and objects of every sharegpu device
for d in /sys/kernel/debug/dri/*/sharegpu_counters; do
    [ -f "$d" ] || continue
    echo "--- $d"; cat "$d"
done
exit 0
EOS
    chmod +x "$OUT/zz-debugfs.sh"
    for t in "${TESTS[@]}"; do IMG_ARGS+=(--test "$OUT/build/$t"); done
    IMG_ARGS+=(--test "$OUT/zz-debugfs.sh")
    # per test binary: the scale test's 20,000 buffers take ~135 s on the lockdep kernel and
    # 490-680 s on the KASAN one (every allocation checked), more on a loaded host; a frozen
    # test is still caught within 300 s by run-guest.sh's silence detector (the scale test
    # prints a heartbeat every 20 s)
    IMG_ARGS+=(--test-timeout 1500)
fi
"$ROOT/scripts/build-guest-image.sh" --out "$IMG" "${IMG_ARGS[@]}" >&2 || give_up "image build failed"

# ---- boot --------------------------------------------------------------------------------
make_run_dir "${NAME#guest-}"
[ "$DEMO" = 1 ] || G1_PROPS=",check-coherency=$CHECK_COHERENCY"
guest_qemu_args 64M "$RUN"
RUN_ARGS=(--kernel "$SHAREGPU_KERNEL_IMAGE" --initrd "$IMG" --log "$LOG"
          --append "sgputest.host=$AGENT")
[ "$DEMO" = 1 ] || RUN_ARGS+=(--append "sgputest.coherency_check=$CHECK_COHERENCY")
rm -f "$LOG"
[ "$AGENT" = 1 ] && start_host_agent "$RUN" "$LOG"
if [ "$DEMO" = 1 ]; then
    QEMU_ARGS+=(-monitor "unix:$RUN/hmp.sock,server=on,wait=off")
    if [ -t 0 ] && [ -t 1 ]; then
        RUN_ARGS+=(--interactive)
        say "HMP monitor: Ctrl-A c on this console, or socat - UNIX-CONNECT:$RUN/hmp.sock"
        say "  (info sharegpu, x_sharegpu_move_bo g0 <hw-handle> system)"
        say "the guest shell follows the demo; 'exit' powers the guest off"
    else
        say "no terminal: the guest powers off after the demo"
        RUN_ARGS+=(--timeout "${TIMEOUT:-900}" --append "sharegpu.mode=tests")
    fi
    "$ROOT/scripts/run-guest.sh" "${RUN_ARGS[@]}" -- "${QEMU_ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
    exit
fi
[ -n "$FILTER" ] && RUN_ARGS+=(--append "sgputest.filter=$FILTER")
[ -n "$APPEND" ] && RUN_ARGS+=(--append "$APPEND")
[ -n "$PROFILE" ] && RUN_ARGS+=(--profile "$PROFILE")
# The common default limit: QEMU must not need a descriptor per buffer (issue 15).
ulimit -Sn 1024
say "booting (log $LOG)"
"$ROOT/scripts/run-guest.sh" "${RUN_ARGS[@]}" --timeout "${TIMEOUT:-2400}" -- \
    "${QEMU_ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
RC=$?

# ---- verdict -----------------------------------------------------------------------------
COUNTS=$(gtest_counts "$LOG" "${TESTS[*]}" 2>"$RUN/cases")
read -r PASSED FAILED SKIPPED <<<"${COUNTS:-0 1 0}"
sed 's/^/[guest-tests]   /' "$RUN/cases" >&2
# The guest benchmarks' ratios (guest-tests/sgpu_bench_test.cc): shown, and each one required
# when its case passed (a benchmark that printed nothing fails the run).
# (grep reads a copy: `tr | grep -q` under pipefail fails when grep stops early, tr's SIGPIPE)
tr -d '\r' <"$LOG" >"$RUN/log.lf"
grep -E '^ratio [a-z0-9_]+ [0-9.]+$' "$RUN/log.lf" | sed 's/^/[guest-tests]   /' >&2
for want in "GuestBench.SubmitToFenceVsVirtioGpuTransfer guest_submit_fence_vs_virtio_gpu_transfer" \
            "GuestBench.PrimeExportImportMmapTouchVsVgem guest_prime_roundtrip_vs_vgem"; do
    case_name=${want% *} ratio=${want#* }
    grep -q "SHAREGPU-GTEST: PASS sgpu_bench_test $case_name " "$RUN/log.lf" || continue
    if ! grep -qE "^ratio $ratio [0-9.]+$" "$RUN/log.lf"; then
        say "FAIL: $case_name passed but printed no 'ratio $ratio'"
        FAILED=$((FAILED + 1))
    fi
done
case $RC in
    0) ;;
    1) say "run-guest.sh: tests failed or a kernel report (lockdep/KASAN/WARN/oops) in $LOG" ;;
    3) say "run-guest.sh: the guest did not finish (timeout/crash), see $LOG" ;;
    *) say "run-guest.sh exit $RC" ;;
esac
say "skipped: $SKIPPED, log: $LOG"
verdict "$PASSED" "$FAILED" && [ "$RC" = 0 ]
