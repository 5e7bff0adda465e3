#!/usr/bin/env bash
# sharegpu guest end-to-end tests: ONE command from sources to a verdict.
#
# usage: scripts/guest-tests.sh [options] [-- extra qemu args]
#   --no-build         do not run the kernel/QEMU build scripts (use the cached outputs)
#   --filter PATTERN   GoogleTest filter for every binary (e.g. 'Sharing*:*Negative*')
#   --timeout SECS     failure detector for the whole guest run (default 2400)
#   --log FILE         serial console log (default $SHAREGPU_CACHE/logs/guest-tests-<time>.log)
#   --no-host-agent    do not start the QMP host agent (host-request tests then SKIP)
#   --build-only       stop after building kernel, QEMU, module and test binaries (used by
#                      scripts/guest-demo.sh); binaries in $SHAREGPU_CACHE/guest-tests/build
#
# Steps (each cached / incremental): scripts/build-guest-kernel.sh, scripts/build-qemu.sh,
# make -C guest-driver (module), make -C guest-tests (static GoogleTest binaries),
# scripts/build-guest-image.sh, then scripts/run-guest.sh boots QEMU (TCG, -M q35) with
#   -device sharegpu,id=g0                 coherent,     64 MiB VRAM
#   -device sharegpu,id=g1,coherent=off    non-coherent, 64 MiB VRAM
# plus vgem (built into the guest kernel), a QMP socket and a second serial port for the
# host agent (guest-tests/host-agent.py: the guest prints "SHAREGPU-HOST-REQUEST: ..." on
# the console, the agent runs QMP x-sharegpu-move-bo and acks on the guest's /dev/ttyS1).
#
# Output: per-case results parsed from the console ("SHAREGPU-GTEST: PASS|FAIL|SKIP <bin>
# <Suite.Test>"), a failure list, and as the LAST line
#   guest-tests: N passed, M failed
# (N/M = GoogleTest cases; a binary that crashes or exits non-zero without reporting a failed
# case counts as one failed case). Exit status non-zero when M > 0, when the guest did not
# finish, or when run-guest.sh found a kernel report (lockdep, KASAN, WARN, oops, ...).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}
OUT=$CACHE/guest-tests
BUILD=1 FILTER="" TIMEOUT=2400 LOG="" AGENT=1 BUILD_ONLY=0
EXTRA=()
say() { echo "[guest-tests] $*" >&2; }
finish() { # $1 passed, $2 failed, $3 exit status
    echo "guest-tests: $1 passed, $2 failed"
    exit "$3"
}
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --filter) FILTER=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --no-host-agent) AGENT=0; shift ;;
        --build-only) BUILD_ONLY=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) say "unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
mkdir -p "$OUT" "$CACHE/logs"
[ -n "$LOG" ] || LOG=$CACHE/logs/guest-tests-$(date +%Y%m%d-%H%M%S)-$$.log

# ---- builds ------------------------------------------------------------------------------
# The machine is shared: never run a QEMU build next to someone else's (the kernel script
# serialises itself with flock).
wait_for_qemu_build() {
    local waited=0
    while pgrep -f 'scripts/build-qemu\.sh|build-qemu\.sh' >/dev/null 2>&1; do
        [ $((waited % 120)) = 0 ] && say "waiting for a running QEMU build to finish..."
        sleep 10; waited=$((waited + 10))
    done
}

if [ "$BUILD" = 1 ]; then
    say "guest kernel (cached)"
    KENV=$("$ROOT/scripts/build-guest-kernel.sh") || { say "kernel build failed"; finish 0 1 1; }
    eval "$KENV"
    wait_for_qemu_build
    say "QEMU (cached)"
    nice -n 10 "$ROOT/scripts/build-qemu.sh" >&2 || { say "QEMU build failed"; finish 0 1 1; }
else
    [ -f "$CACHE/kernel/current/kernel.env" ] || { say "no cached kernel"; finish 0 1 1; }
    # shellcheck disable=SC1091
    . "$CACHE/kernel/current/kernel.env"
fi
KDIR=${SHAREGPU_KERNEL_BUILD:?}
QEMU_BIN=${QEMU:-$CACHE/qemu/current/qemu-system-x86_64}
[ -x "$QEMU_BIN" ] || { say "no QEMU at $QEMU_BIN"; finish 0 1 1; }
export QEMU=$QEMU_BIN

say "driver module (KDIR=$KDIR)"
nice -n 10 make -C "$ROOT/guest-driver" KDIR="$KDIR" modules >&2 ||
    { say "driver build failed"; finish 0 1 1; }
say "test binaries"
nice -n 10 make -C "$ROOT/guest-tests" -j2 KDIR="$KDIR" O="$OUT/build" >&2 ||
    { say "test build failed"; finish 0 1 1; }
[ "$BUILD_ONLY" = 1 ] && { say "built: $OUT/build"; exit 0; }

TESTS=(sgpu_negative_test sgpu_coherency_test sgpu_sharing_test sgpu_invalidation_test
       sgpu_locking_test)
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
IMG_ARGS=(--out "$OUT/initrd.cpio.gz" --module "$ROOT/guest-driver/sharegpu.ko")
for t in "${TESTS[@]}"; do IMG_ARGS+=(--test "$OUT/build/$t"); done
IMG_ARGS+=(--test "$OUT/zz-debugfs.sh")
"$ROOT/scripts/build-guest-image.sh" "${IMG_ARGS[@]}" >&2 || { say "image build failed"; finish 0 1 1; }

# ---- boot --------------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/sgpu-gt.XXXXXX)
AGENT_PID=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT
APPEND="sgputest.host=$AGENT"
[ -n "$FILTER" ] && APPEND="$APPEND sgputest.filter=$FILTER"
# -device isa-serial turns off QEMU's default serial, so serial0 (the console) is given
# explicitly; -nic none: no default NIC (its option ROM is not installed)
QEMU_ARGS=(-nic none -serial mon:stdio
           -device sharegpu,id=g0,vram-size=64M
           -device sharegpu,id=g1,coherent=off,vram-size=64M
           -qmp "unix:$RUN/qmp.sock,server=on,wait=off"
           -chardev "socket,id=sgpureply,path=$RUN/reply.sock,server=on,wait=off"
           -device isa-serial,chardev=sgpureply,index=1
           ${EXTRA[@]+"${EXTRA[@]}"})
rm -f "$LOG"
if [ "$AGENT" = 1 ]; then
    python3 "$ROOT/guest-tests/host-agent.py" --log "$LOG" --qmp "$RUN/qmp.sock" \
        --reply "$RUN/reply.sock" --connect-timeout 300 &
    AGENT_PID=$!
fi
say "booting (log $LOG)"
"$ROOT/scripts/run-guest.sh" --initrd "$OUT/initrd.cpio.gz" --log "$LOG" --timeout "$TIMEOUT" \
    --append "$APPEND" -- "${QEMU_ARGS[@]}"
RC=$?

# ---- verdict -----------------------------------------------------------------------------
COUNTS=$(tr -d '\r' <"$LOG" | awk -v bins="${TESTS[*]}" '
    function rest(line, tag,   i) { i = index(line, tag); return substr(line, i + length(tag)) }
    /SHAREGPU-GTEST: START / { split(rest($0, "SHAREGPU-GTEST: START "), f, " ");
        k = f[1] " " f[2]; if (!(k in res)) { order[++n] = k; res[k] = "" } next }
    /SHAREGPU-GTEST: (PASS|FAIL|SKIP) / { s = rest($0, "SHAREGPU-GTEST: "); split(s, f, " ");
        k = f[2] " " f[3]; if (!(k in res)) order[++n] = k; res[k] = f[1]; ran[f[2]] = 1; next }
    /SHAREGPU-GTEST-SUMMARY: / { split(rest($0, "SHAREGPU-GTEST-SUMMARY: "), f, " ");
        summary[f[1]] = 1; next }
    /SHAREGPU-TEST: (PASS|FAIL) / { s = rest($0, "SHAREGPU-TEST: "); split(s, f, " ");
        b = f[2]; sub(/^[0-9][0-9]-/, "", b); bin[b] = f[1]; next }
    END {
        p = 0; fl = 0; sk = 0
        for (i = 1; i <= n; i++) {
            k = order[i]; v = res[k]
            if (v == "PASS") p++
            else if (v == "SKIP") { sk++; print "SKIP " k > "/dev/stderr" }
            else { fl++; failed[k] = 1
                   print "FAIL " k (v == "" ? " (no result: crashed or killed)" : "") > "/dev/stderr" }
            split(k, kb, " "); if (v == "FAIL" || v == "") binfail[kb[1]]++
        }
        nb = split(bins, bl, " ")
        for (i = 1; i <= nb; i++) {
            b = bl[i]
            if (!(b in bin)) { fl++; print "FAIL " b " (never ran)" > "/dev/stderr"; continue }
            if (bin[b] == "FAIL" && !binfail[b]) {
                fl++; print "FAIL " b " (exit status non-zero, no failed case)" > "/dev/stderr" }
            else if (bin[b] == "PASS" && !(b in summary)) {
                fl++; print "FAIL " b " (no GoogleTest summary)" > "/dev/stderr" }
        }
        print p, fl, sk
    }' 2>"$RUN/cases")
read -r PASSED FAILED SKIPPED <<<"${COUNTS:-0 1 0}"
sed 's/^/[guest-tests]   /' "$RUN/cases" >&2
case $RC in
    0) ;;
    1) say "run-guest.sh: tests failed or a kernel report (lockdep/KASAN/WARN/oops) in $LOG" ;;
    3) say "run-guest.sh: the guest did not finish (timeout/crash), see $LOG" ;;
    *) say "run-guest.sh exit $RC" ;;
esac
say "skipped: $SKIPPED, log: $LOG"
STATUS=0
[ "$FAILED" = 0 ] && [ "$RC" = 0 ] || STATUS=1
finish "$PASSED" "$FAILED" "$STATUS"
