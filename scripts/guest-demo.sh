#!/usr/bin/env bash
# sharegpu guest demo: boots the guest-test setup (two sharegpu devices g0 coherent /
# g1 coherent=off, vgem) with the QEMU monitor reachable, runs guest-tests/sgpu_demo.cc
# (export on one device, import on the other, a move with move_notify, a coherency barrier,
# an eviction forced from the QEMU monitor) and then drops to a guest shell.
#
# usage: scripts/guest-demo.sh [--no-build] [--timeout SECS] [-- extra qemu args]
#   --no-build      use the cached kernel/QEMU (still rebuilds module + demo incrementally)
#   --timeout SECS  non-interactive failure detector (default 900)
#
# Interactive (stdin is a terminal): console on the terminal, guest shell after the demo
# (exit it to power off). The HMP monitor listens on a unix socket printed at start, e.g.
#     socat - UNIX-CONNECT:/tmp/sgpu-demo.XXXX/hmp.sock     then: info sharegpu
#     x_sharegpu_move_bo g0 <hw-handle> system;  or Ctrl-A c on the console (mux monitor)
# Non-interactive (CI, no TTY): the guest powers off after the demo; exit status is the
# demo's (0 = everything behaved, as judged by scripts/run-guest.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}
OUT=$CACHE/guest-tests
NOBUILD=() TIMEOUT=900 EXTRA=()
say() { echo "[guest-demo] $*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) NOBUILD=(--no-build); shift ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) say "unknown argument $1"; exit 2 ;;
    esac
done

"$ROOT/scripts/guest-tests.sh" --build-only ${NOBUILD[@]+"${NOBUILD[@]}"} || exit 1
. "$CACHE/kernel/current/kernel.env"
export QEMU=${QEMU:-$CACHE/qemu/current/qemu-system-x86_64}
# the test binaries ride along in /usr/bin for the shell (e.g. sgpu_sharing_test
# --gtest_filter='*Vgem*')
FILES=()
for t in "$OUT"/build/sgpu_*_test; do FILES+=(--file "$t:/usr/bin/$(basename "$t")"); done
"$ROOT/scripts/build-guest-image.sh" --out "$OUT/demo.cpio.gz" --init-mode demo \
    --module "$ROOT/guest-driver/sharegpu.ko" --test "$OUT/build/sgpu_demo" \
    ${FILES[@]+"${FILES[@]}"} >&2 || exit 1

RUN=$(mktemp -d /tmp/sgpu-demo.XXXXXX)
LOG=$CACHE/logs/guest-demo-$(date +%Y%m%d-%H%M%S)-$$.log
mkdir -p "$CACHE/logs"
AGENT_PID=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT
python3 "$ROOT/guest-tests/host-agent.py" --log "$LOG" --qmp "$RUN/qmp.sock" \
    --reply "$RUN/reply.sock" --connect-timeout 300 &
AGENT_PID=$!

RUNARGS=(--initrd "$OUT/demo.cpio.gz" --log "$LOG" --append "sgputest.host=1")
if [ -t 0 ] && [ -t 1 ]; then
    RUNARGS+=(--interactive)
    say "HMP monitor: Ctrl-A c on this console, or socat - UNIX-CONNECT:$RUN/hmp.sock"
    say "  (info sharegpu, x_sharegpu_move_bo g0 <hw-handle> system)"
    say "the guest shell follows the demo; 'exit' powers the guest off"
else
    say "no terminal: the guest powers off after the demo"
    RUNARGS+=(--timeout "$TIMEOUT" --append "sharegpu.mode=tests")
fi
"$ROOT/scripts/run-guest.sh" "${RUNARGS[@]}" -- -nic none -serial mon:stdio \
    -device sharegpu,id=g0,vram-size=64M -device sharegpu,id=g1,coherent=off,vram-size=64M \
    -qmp "unix:$RUN/qmp.sock,server=on,wait=off" \
    -monitor "unix:$RUN/hmp.sock,server=on,wait=off" \
    -chardev "socket,id=sgpureply,path=$RUN/reply.sock,server=on,wait=off" \
    -device isa-serial,chardev=sgpureply,index=1 \
    ${EXTRA[@]+"${EXTRA[@]}"}
