#!/usr/bin/env bash
# Self-test of scripts/run-guest.sh's failure detectors. Uses the cached guest kernel and
# QEMU (never builds them; scripts/guest-tests.sh or `make check` does).
#
# usage: scripts/run-guest-selftest.sh [--silence SECS]   (default 10: the debug guest's
#        boot prints at least once a second, 2026-12-04)
#
# Cases:
#   frozen-guest      a guest that goes silent (image init mode "silent") with --silence SECS:
#                     exit 4 (FROZEN), QEMU killed, and the log holds QEMU's thread
#                     backtraces from gdb (a "Thread N" header, a frame of QEMU's main loop)
#                     and the monitor's "info sharegpu" for both devices; run with
#                     --profile, whose report (scripts/guest-profile.py) must have sampled
#                     both vCPUs at 25 Hz, seen them idle, named a kernel function and read
#                     a caller chain (--stacks), and for which the guest printed its
#                     modules' functions (none loaded here)
#   qemu-abort        SIGABRT sent to QEMU once the guest is up: exit 5, reason SIGABRT
#   qemu-exit-status  QEMU rejecting its command line: exit 5, reason "exit status 1"
#   kernel-reports    --check-log on console logs: each lockup detector's report (soft
#                     lockup, hung task, RCU stall, workqueue lockup), a taint other than
#                     O/E and lockdep switched off (SHAREGPU-KERNEL-STATE) fail with exit
#                     1; a clean log passes; a WARN allowed with --allow-warn-in passes, the
#                     same WARN without it, or another WARN beside it, fails
# Output: "run-guest-selftest: PASS|FAIL <case> (...)" per case and, last,
#   run-guest-selftest: N passed, M failed
# Exit status non-zero when a case failed. Logs: $SHAREGPU_CACHE/logs/run-guest-selftest-*.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" run-guest-selftest

RUNNER=$ROOT/scripts/run-guest.sh
SILENCE=10
while [ $# -gt 0 ]; do
    case "$1" in
        --silence) SILENCE=$2; shift 2 ;;
        *) other_arg "$1" ;;
    esac
done

make_run_dir rgst
TMP=$RUN
ulimit -c 0  # the aborted QEMU must not leave a core file behind
STAMP=$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$CACHE/logs"
guest_qemu_args 64M
passed=0 failed=0

# ---- case bookkeeping -------------------------------------------------------------------
problems=() case_name="" case_start=0
begin_case() { case_name=$1; problems=(); case_start=$SECONDS; }
expect() { # DESCRIPTION COMMAND...: records DESCRIPTION when COMMAND fails
    local what=$1; shift
    "$@" >/dev/null 2>&1 || problems+=("$what")
}
end_case() { # $1 = the runner's stderr file to show on failure (optional)
    local took=$((SECONDS - case_start))
    if [ ${#problems[@]} = 0 ]; then
        passed=$((passed + 1))
        echo "run-guest-selftest: PASS $case_name (${took}s)"
        return
    fi
    failed=$((failed + 1))
    echo "run-guest-selftest: FAIL $case_name (${took}s)"
    printf '  expected: %s\n' "${problems[@]}"
    if [ -n "${1:-}" ] && [ -f "$1" ]; then
        echo "  runner stderr (last 15 lines):"
        tail -n 15 "$1" | sed 's/^/    /'
    fi
}
log_has() { grep -sqE -- "$2" "$1"; }  # FILE ERE

# start_guest NAME RUNNER-ARGS...: the runner on the silent image in the background (its pid in
# $runner, log in $LOG, stderr in $TMP/NAME.err); returns once the guest is up, with the pid of
# the QEMU it started (from -pidfile) in $qemu_pid; fails the case when the guest is not up
# within 300 s or the runner ended first
start_guest() {
    local name=$1 deadline=$((SECONDS + 300)); shift
    LOG=$CACHE/logs/run-guest-selftest-$STAMP-$name.log
    rm -f "$LOG"
    "$RUNNER" --initrd "$IMG" --log "$LOG" "$@" -- "${QEMU_ARGS[@]}" -pidfile "$TMP/$name.pid" \
        >/dev/null 2>"$TMP/$name.err" &
    runner=$! qemu_pid=""
    until log_has "$LOG" '^SHAREGPU: silent mode' && [ -s "$TMP/$name.pid" ]; do
        if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$runner" 2>/dev/null; then
            problems+=("the guest up within 300 s, while the runner runs")
            kill "$runner" 2>/dev/null
            return 1
        fi
        sleep 0.5
    done
    qemu_pid=$(cat "$TMP/$name.pid")
}
qemu_gone() { [ -n "$qemu_pid" ] && ! kill -0 "$qemu_pid" 2>/dev/null; }
profile_sane() { # REPORT: "guest profile: R rounds, 2R vCPU samples, I idle ..." as above
    local r s i
    read -r r s i < <(sed -n 's/^guest profile: \([0-9]*\) rounds, \([0-9]*\) vCPU samples, \([0-9]*\) idle.*/\1 \2 \3/p' "$1")
    [ -n "$r" ] && [ "$r" -ge $((SILENCE * 25 / 2)) ] && [ "$s" = $((2 * r)) ] && [ "$i" -gt 0 ]
}

# ---- prerequisites: cached kernel + QEMU, the silent image ------------------------------
IMG=$TMP/silent.cpio.gz
have_guest=1
if ! load_kernel_env || ! find_qemu; then
    echo "run-guest-selftest: no cached guest kernel or QEMU (run scripts/guest-tests.sh first)"
    have_guest=0
elif ! "$ROOT/scripts/build-guest-image.sh" --out "$IMG" --init-mode silent 2>"$TMP/image.err"; then
    cat "$TMP/image.err"
    have_guest=0
fi

# ---- frozen-guest -----------------------------------------------------------------------
begin_case frozen-guest
if [ "$have_guest" = 1 ]; then
    GUEST_PROFILE_ARGS="--stacks 4" \
        start_guest frozen --silence "$SILENCE" --timeout 600 --profile "$TMP/frozen.profile"
    rc=0
    wait "$runner" || rc=$?
    expect "runner exit status 4 (FROZEN), got $rc" [ "$rc" = 4 ]
    expect "the guest reached silent mode before the watchdog fired" \
        log_has "$LOG" '^SHAREGPU: silent mode'
    expect "stderr: 'FROZEN: no console output for $SILENCE s'" \
        log_has "$TMP/frozen.err" "FROZEN: no console output for $SILENCE s"
    expect "log: a gdb 'Thread N (Thread 0x...' header" log_has "$LOG" '^Thread [0-9]+ \(Thread 0x'
    expect "log: a backtrace frame in QEMU's main loop" \
        log_has "$LOG" '^#[0-9]+ .*(main_loop_wait|qemu_main_loop|qemu_default_main) \('
    expect "log: 'info sharegpu' output for g0" log_has "$LOG" '^sharegpu g0 \('
    expect "log: 'info sharegpu' output for g1" log_has "$LOG" '^sharegpu g1 \('
    expect "log: 'info registers -a' output" log_has "$LOG" '^[RE]IP='
    expect "stderr: a backtrace excerpt" log_has "$TMP/frozen.err" '^\[run-guest\] +Thread [0-9]+ '
    expect "no QEMU left running (pid ${qemu_pid:-?})" qemu_gone
    # --profile sampled the run: 25 rounds a second of two vCPUs, the silent guest mostly
    # halted, and what ran named by System.map
    expect "profile: $(head -n 1 "$TMP/frozen.profile" 2>/dev/null || echo none); want two vCPU samples a round, over ${SILENCE} s at 25 Hz, some idle" \
        profile_sane "$TMP/frozen.profile"
    expect "profile: a busy function named by System.map" \
        log_has "$TMP/frozen.profile" '^ *[0-9.]+ %  +[0-9]+  [A-Za-z_][A-Za-z0-9_.]*$'
    expect "log: the modules' functions for the profile (sharegpu.kallsyms=1; this image loads none)" \
        log_has "$LOG" '^SHAREGPU-KALLSYMS-END'
    expect "profile (--stacks 4): a caller chain read through the monitor" \
        log_has "$TMP/frozen.profile" '^ +[0-9]+  < [A-Za-z_][A-Za-z0-9_.]* < [A-Za-z_]'
else
    problems+=("a cached guest kernel, QEMU and the silent image")
fi
end_case "$TMP/frozen.err"

# ---- qemu-abort -------------------------------------------------------------------------
begin_case qemu-abort
if [ "$have_guest" = 1 ]; then
    start_guest abort --timeout 600 && kill -ABRT "$qemu_pid"
    rc=0
    wait "$runner" || rc=$?
    expect "runner exit status 5 (QEMU exited abnormally), got $rc" [ "$rc" = 5 ]
    expect "stderr: 'QEMU exited abnormally: killed by signal 6 (SIGABRT)'" \
        log_has "$TMP/abort.err" 'QEMU exited abnormally: killed by signal 6 \(SIGABRT\)'
else
    problems+=("a cached guest kernel, QEMU and the silent image")
fi
end_case "$TMP/abort.err"

# ---- qemu-exit-status -------------------------------------------------------------------
begin_case qemu-exit-status
if [ "$have_guest" = 1 ]; then
    rc=0
    "$RUNNER" --initrd "$IMG" --log "$CACHE/logs/run-guest-selftest-$STAMP-exit-status.log" \
        --timeout 120 -- -device no-such-device >/dev/null 2>"$TMP/exit.err" || rc=$?
    expect "runner exit status 5 (QEMU exited abnormally), got $rc" [ "$rc" = 5 ]
    expect "stderr: 'QEMU exited abnormally: exit status 1'" \
        log_has "$TMP/exit.err" 'QEMU exited abnormally: exit status 1'
    expect "stderr: QEMU's own error message" log_has "$TMP/exit.err" 'no-such-device'
else
    problems+=("a cached guest kernel, QEMU and the silent image")
fi
end_case "$TMP/exit.err"

# ---- kernel-reports ---------------------------------------------------------------------
begin_case kernel-reports
REPORTS=(
    "[  140.123456] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [sgpu_fuzz:201]"
    "[  250.000000] INFO: task kworker/u8:3:77 blocked for more than 120 seconds."
    "[   90.500000] rcu: INFO: rcu_sched self-detected stall on CPU"
    "[   90.500000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
    "[   95.000000] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: {"
    "[   61.000000] BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!"
)
PASS_LINE="SHAREGPU-SUMMARY: PASS tests=1 passed=1 failed=0 modules=0 module_failures=0"
i=0
for report in "${REPORTS[@]}"; do
    i=$((i + 1))
    printf '[    0.000000] Linux version 6.12\n%s\n%s\n' "$report" "$PASS_LINE" >"$TMP/report$i.log"
    rc=0
    "$RUNNER" --check-log "$TMP/report$i.log" >/dev/null 2>"$TMP/report$i.err" || rc=$?
    expect "exit 1 and KERNEL REPORT for '$report', got $rc" \
        bash -c '[ "$1" = 1 ] && grep -q "KERNEL REPORT" "$2"' _ "$rc" "$TMP/report$i.err"
done
# the kernel's final state: W (bit 9) tainted, lockdep off; O|E alone is clean
for state in "tainted=4608 debug_locks=1" "tainted=4096 debug_locks=0"; do
    printf '[    0.000000] Linux version 6.12\nSHAREGPU-KERNEL-STATE: %s\n%s\n' "$state" \
        "$PASS_LINE" >"$TMP/state.log"
    rc=0
    "$RUNNER" --check-log "$TMP/state.log" >/dev/null 2>"$TMP/state.err" || rc=$?
    expect "exit 1 and KERNEL REPORT for '$state', got $rc" \
        bash -c '[ "$1" = 1 ] && grep -q "KERNEL REPORT" "$2"' _ "$rc" "$TMP/state.err"
done
# the detectors' boot-time announcements are not reports
printf '%s\n' "[    0.000000] rcu: Preemptible hierarchical RCU implementation." \
    "[    0.100000] rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies." \
    "[    0.500000] watchdog: Delayed init of the lockup detector failed: -19" \
    "[    1.000000] NMI watchdog: Perf NMI watchdog permanently disabled" \
    "SHAREGPU-KERNEL-STATE: tainted=12288 debug_locks=1" "$PASS_LINE" >"$TMP/clean.log"
rc=0
"$RUNNER" --check-log "$TMP/clean.log" >/dev/null 2>"$TMP/clean.err" || rc=$?
expect "exit 0 for a clean log, got $rc" [ "$rc" = 0 ]
# --allow-warn-in: the WARN a KUnit case makes on purpose is not a report (and its W taint
# is allowed); another WARN, or the same WARN from another caller, still is
warn_block() { # FUNC MODULE
    printf '%s\n' "[  192.472073] ------------[ cut here ]------------" \
        "[  192.474081] WARNING: CPU: 1 PID: 621 at drivers/gpu/drm/ttm/ttm_device.c:192 ttm_device_init+0x1a0/0x1c0" \
        "[  192.490610]  ttm_device_kunit_init+0x7b/0x90 [ttm_kunit_helpers]" \
        "[  192.492348]  $1+0xfd/0x210 [$2]" \
        "[  192.504561] ---[ end trace 0000000000000000 ]---"
}
ALLOW=(--allow-taint-test --allow-warn-in "ttm_device_init_no_vma_man [ttm_device_test]")
{ echo "[    0.000000] Linux version 6.12"; warn_block ttm_device_init_no_vma_man ttm_device_test
  echo "SHAREGPU-KERNEL-STATE: tainted=266752 debug_locks=1"; echo "$PASS_LINE"; } >"$TMP/warn-ok.log"
rc=0
"$RUNNER" --check-log "$TMP/warn-ok.log" "${ALLOW[@]}" >/dev/null 2>"$TMP/warn-ok.err" || rc=$?
expect "exit 0 for an expected KUnit WARN, got $rc" [ "$rc" = 0 ]
rc=0
"$RUNNER" --check-log "$TMP/warn-ok.log" --allow-taint-test >/dev/null 2>"$TMP/warn-no.err" || rc=$?
expect "exit 1 for the same WARN without --allow-warn-in, got $rc" [ "$rc" = 1 ]
{ echo "[    0.000000] Linux version 6.12"; warn_block ttm_device_init_no_vma_man ttm_device_test
  warn_block sgpu_device_init sharegpu
  echo "SHAREGPU-KERNEL-STATE: tainted=266752 debug_locks=1"; echo "$PASS_LINE"; } >"$TMP/warn-bad.log"
rc=0
"$RUNNER" --check-log "$TMP/warn-bad.log" "${ALLOW[@]}" >/dev/null 2>"$TMP/warn-bad.err" || rc=$?
expect "exit 1 and KERNEL REPORT for the WARN from sharegpu beside the expected one, got $rc" \
    bash -c '[ "$1" = 1 ] && grep -q "KERNEL REPORT" "$2"' _ "$rc" "$TMP/warn-bad.err"
end_case

verdict "$passed" "$failed"
