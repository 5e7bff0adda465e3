#!/usr/bin/env bash
# Boots the sharegpu guest kernel + initramfs under QEMU TCG (q35) and checks the result.
#
# usage: scripts/run-guest.sh --initrd IMG.cpio.gz [options] [-- extra qemu args...]
#   --kernel BZIMAGE   default: SHAREGPU_KERNEL_IMAGE from
#                      ${SHAREGPU_CACHE:-~/.cache/sharegpu}/kernel/current/kernel.env
#   --initrd FILE      initramfs from scripts/build-guest-image.sh (required)
#   --log FILE         serial console log (default: $SHAREGPU_CACHE/logs/guest-<time>.log)
#   --timeout SECS     failure detector for a hung guest (default $GUEST_TIMEOUT or 900);
#                      0 = none. The guest powers itself off when done.
#   --append "ARGS"    extra kernel command line (e.g. sharegpu.mode=shell)
#   --interactive      console on the terminal (for --init-mode shell/demo); no timeout
#   --smp N / --mem M  default 2 / 1G
# Everything after "--" goes to QEMU verbatim, e.g.  -- -device sharegpu
# QEMU binary: $QEMU, else $SHAREGPU_CACHE/qemu/current/qemu-system-x86_64, else
# qemu-system-x86_64 from PATH.
#
# Exit status: 0 = guest printed "SHAREGPU-SUMMARY: PASS" and the log has no kernel
# report; 1 = tests failed or kernel report (lockdep, KASAN, WARNING, Oops, BUG, panic);
# 3 = no summary (timeout, crash, hang); 2 = usage error.
set -euo pipefail

CACHE=${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}
KERNEL="" INITRD="" LOG="" APPEND="" INTERACTIVE=0 SMP=2 MEM=1G
TIMEOUT=${GUEST_TIMEOUT:-900}
EXTRA=()
usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "[run-guest] ERROR: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) KERNEL=$2; shift 2 ;;
        --initrd) INITRD=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --append) APPEND="$APPEND $2"; shift 2 ;;
        --interactive) INTERACTIVE=1; shift ;;
        --smp) SMP=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [ -z "$KERNEL" ]; then
    env_file=$CACHE/kernel/current/kernel.env
    [ -f "$env_file" ] || die "no --kernel and no $env_file (run scripts/build-guest-kernel.sh)"
    KERNEL=$(sed -n 's/^SHAREGPU_KERNEL_IMAGE=//p' "$env_file")
fi
[ -f "$KERNEL" ] || die "kernel $KERNEL not found"
[ -n "$INITRD" ] && [ -f "$INITRD" ] || die "--initrd FILE required (scripts/build-guest-image.sh)"

if [ -z "${QEMU:-}" ]; then
    if [ -x "$CACHE/qemu/current/qemu-system-x86_64" ]; then
        QEMU=$CACHE/qemu/current/qemu-system-x86_64
    else
        QEMU=$(command -v qemu-system-x86_64 || true)
    fi
fi
[ -n "$QEMU" ] && [ -x "$QEMU" ] || die "no QEMU (set QEMU=/path/to/qemu-system-x86_64)"

if [ -z "$LOG" ]; then
    mkdir -p "$CACHE/logs"
    LOG=$CACHE/logs/guest-$(date +%Y%m%d-%H%M%S)-$$.log
fi
mkdir -p "$(dirname "$LOG")"

FW=()
for d in /usr/share/qemu /usr/share/seabios; do [ -d "$d" ] && FW+=(-L "$d"); done
CMD=("$QEMU" -M q35 -accel tcg -m "$MEM" -smp "$SMP" -nographic -no-reboot -nic none
     "${FW[@]}" -kernel "$KERNEL" -initrd "$INITRD"
     -append "console=ttyS0 panic=-1 loglevel=7 ${APPEND# }"
     ${EXTRA[@]+"${EXTRA[@]}"})
echo "[run-guest] $QEMU (timeout ${TIMEOUT}s) log: $LOG" >&2
echo "[run-guest] ${CMD[*]}" >&2

START=$(date +%s.%N)
set +e
if [ "$INTERACTIVE" = 1 ]; then
    "${CMD[@]}" 2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
elif [ "$TIMEOUT" = 0 ]; then
    "${CMD[@]}" </dev/null 2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
else
    timeout -k 10 "$TIMEOUT" "${CMD[@]}" </dev/null 2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
fi
set -e
ELAPSED=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

# ---- verdict ----------------------------------------------------------------------------
CLEAN=$(mktemp)
trap 'rm -f "$CLEAN"' EXIT
tr -d '\r' <"$LOG" >"$CLEAN"
status=0
PATTERN='WARNING: possible|circular locking|possible recursive locking|BUG: KASAN|(^|[^A-Za-z_])WARNING:|-+\[ cut here \]-+|Oops|(^|[^A-Za-z_])BUG:|Kernel panic|INFO: task .* blocked|inconsistent lock state|UBSAN:|general protection fault'
if grep -qE "$PATTERN" "$CLEAN"; then
    echo "[run-guest] KERNEL REPORT in $LOG:" >&2
    grep -nE "$PATTERN" "$CLEAN" | head -n 20 | sed 's/^/[run-guest]   /' >&2
    status=1
fi
SUMMARY=$(grep -E '^SHAREGPU-SUMMARY:' "$CLEAN" | tail -n 1 || true)
grep -E '^SHAREGPU-TEST: FAIL' "$CLEAN" | sed 's/^/[run-guest]   /' >&2 || true
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "[run-guest] TIMEOUT: guest still running after ${TIMEOUT}s" >&2
fi
if [ -z "$SUMMARY" ]; then
    if grep -q '^SHAREGPU: interactive shell' "$CLEAN"; then
        echo "[run-guest] no summary (shell mode), qemu exit $rc, ${ELAPSED}s" >&2
        exit $status
    fi
    echo "[run-guest] FAIL: no SHAREGPU-SUMMARY line (qemu exit $rc, ${ELAPSED}s); see $LOG" >&2
    exit 3
fi
case "$SUMMARY" in
    "SHAREGPU-SUMMARY: PASS"*) ;;
    *) status=1 ;;
esac
if [ "$status" = 0 ]; then verdict=PASS
elif [ "${SUMMARY#SHAREGPU-SUMMARY: PASS}" != "$SUMMARY" ]; then verdict="FAIL (kernel report)"
else verdict=FAIL; fi
echo "[run-guest] $verdict in ${ELAPSED}s: $SUMMARY" >&2
echo "$SUMMARY"
exit $status
