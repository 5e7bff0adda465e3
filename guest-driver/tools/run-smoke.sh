#!/usr/bin/env bash
# Builds the sharegpu module + smoke test against the guest kernel and boots a guest
# with two sharegpu devices (the second one non-coherent).
# usage: guest-driver/tools/run-smoke.sh [extra run-guest.sh args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}
env_file=$CACHE/kernel/current/kernel.env
[ -f "$env_file" ] || { echo "no $env_file: build the guest kernel first" >&2; exit 2; }
KDIR=${KDIR:-$(sed -n 's/^SHAREGPU_KERNEL_BUILD=//p' "$env_file")}
OUT=${OUT:-$CACHE/guest-driver}
mkdir -p "$OUT"
nice -n 10 make -C "$ROOT/guest-driver" KDIR="$KDIR" modules >&2
nice -n 10 make -C "$ROOT/guest-driver/tools" KDIR="$KDIR" >&2
cat >"$OUT/10-dmesg.sh" <<'EOS'
#!/bin/sh
# dump the driver's kernel messages (after the smoke test)
dmesg | grep -i -E 'sharegpu|drm' | tail -n 60
exit 0
EOS
chmod +x "$OUT/10-dmesg.sh"
"$ROOT/scripts/build-guest-image.sh" --out "$OUT/initrd.cpio.gz" \
    --module "$ROOT/guest-driver/sharegpu.ko" \
    --test "$ROOT/guest-driver/tools/sgpu_smoke" --test "$OUT/10-dmesg.sh" >&2
LOG=${LOG:-$CACHE/logs/guest-driver-smoke-$(date +%Y%m%d-%H%M%S).log}
mkdir -p "$(dirname "$LOG")"
MON=$OUT/monitor.sock
rm -f "$MON" "$LOG"
python3 "$ROOT/guest-driver/tools/hostmove.py" "$LOG" "$MON" 900 &
MOVER=$!
set +e
"$ROOT/scripts/run-guest.sh" --initrd "$OUT/initrd.cpio.gz" --log "$LOG" \
    --append "sgpu.hostmove=1" "$@" -- -nic none -monitor "unix:$MON,server=on,wait=off" \
    -device sharegpu,id=sgpu0 -device sharegpu,id=sgpu1,coherent=off,vram-size=33554432
rc=$?
kill "$MOVER" 2>/dev/null
wait "$MOVER" 2>/dev/null
exit $rc
