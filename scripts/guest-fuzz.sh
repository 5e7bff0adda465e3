#!/usr/bin/env bash
# sharegpu guest ioctl fuzzing: boots the guest (lockdep kernel, two sharegpu devices + vgem,
# like scripts/guest-tests.sh but with 16 MiB of VRAM each) once per seed and runs the stateful ioctl fuzzer
# guest-tests/sgpu_fuzz in it (3 processes x 2 threads as an unprivileged user; see
# docs/user-guide.md, "Fuzzing the driver").
#
# usage: scripts/guest-fuzz.sh [options] [-- extra sgpu_fuzz arguments]
#   --seeds "1 2 3"    seeds to run, in this order
#   --random N         N more seeds drawn from /dev/urandom (printed; default 1 when no
#                      --seeds is given)
#   --duration SECS    fuzzing time per seed (default 60)
#   --no-build         do not run the kernel/QEMU build scripts (use the cached outputs; the
#                      module and the guest binaries are still made, that is cheap)
#   --log-dir DIR      one console log per seed (default $SHAREGPU_CACHE/logs/guest-fuzz-<time>)
# Extra sgpu_fuzz arguments must not contain commas, e.g. -- --procs 2 --min-moves 0
#
# A seed FAILS when QEMU exits abnormally (e.g. an assertion's abort), the guest freezes or
# never finishes, the kernel log has a report (lockdep, WARN, BUG, hung task, ...), a fuzzer
# worker does not exit cleanly, or a coverage floor is missed; a QEMU crash is always
# attributed to the seed whose boot it ended.
#
# Output: one line per seed,
#   guest-fuzz: seed N PASS (T s) submits=... imports=... moves=... mmaps=...
#   guest-fuzz: seed N FAIL <why> (log FILE)
# and as the LAST line
#   guest-fuzz: N passed, M failed
# Exit status non-zero when M > 0.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" guest-fuzz

SEEDS=() RANDOM_N="" DURATION=60 BUILD=1 LOG_DIR="" FUZZ_ARGS=(--uid 65534)

while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) read -r -a more <<<"$2"; SEEDS+=("${more[@]}"); shift 2 ;;
        --random) RANDOM_N=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --log-dir) LOG_DIR=$2; shift 2 ;;
        --) shift; FUZZ_ARGS+=("$@"); break ;;
        *) other_arg "$1" ;;
    esac
done
[[ $DURATION =~ ^[0-9]+$ ]] && [ "$DURATION" -gt 0 ] || usage_error "--duration wants seconds"
for s in ${SEEDS[@]+"${SEEDS[@]}"}; do
    [[ $s =~ ^[0-9]+$ ]] || usage_error "seed '$s' is not a decimal number"
done
for a in "${FUZZ_ARGS[@]}"; do
    [[ $a != *,* ]] || usage_error "fuzzer argument '$a' has a comma"
done
# g0's broker (below): at least 10 successful BROKER_EXPORTs per minute (seed 1 made 86 in
# 40 s on a loaded host); an argument after -- overrides it
FUZZ_ARGS=(--min-broker-exports $((DURATION / 6)) "${FUZZ_ARGS[@]}")
[ -n "$RANDOM_N" ] || { [ ${#SEEDS[@]} -gt 0 ] && RANDOM_N=0 || RANDOM_N=1; }
[[ $RANDOM_N =~ ^[0-9]+$ ]] || usage_error "--random wants a count"
for ((i = 0; i < RANDOM_N; i++)); do
    s=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    say "random seed: $s"
    SEEDS+=("$s")
done
[ -n "$LOG_DIR" ] || LOG_DIR=$CACHE/logs/guest-fuzz-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$LOG_DIR"

# ---- builds (guest-tests.sh owns the pipeline: kernel, QEMU, module, guest binaries) -----
BUILD_ARGS=(--build-only)
[ "$BUILD" = 1 ] || BUILD_ARGS+=(--no-build)
"$ROOT/scripts/guest-tests.sh" "${BUILD_ARGS[@]}" >&2 || give_up "build failed"
FUZZER=$CACHE/guest-tests/build/sgpu_fuzz
[ -x "$FUZZER" ] || give_up "no fuzzer binary at $FUZZER"

make_run_dir fuzz
"$ROOT/scripts/build-guest-image.sh" --out "$RUN/initrd.cpio.gz" --init-mode fuzz \
    --module "$ROOT/guest-driver/sharegpu.ko" --fuzzer "$FUZZER" >&2 || give_up "image build failed"

# g0 is connected to a host broker (the fuzzer's BROKER_* ops: exports that move a BO to
# storage of its own while other workers use it, grants, unexports, imports of its own and
# of forged ids); g1 has none (its BROKER_* calls fail with EOPNOTSUPP).
say "broker daemon (meson, build/)"
build_broker || give_up "broker build failed"
start_broker "$RUN/broker.sock" "$RUN/broker.log" || give_up "no broker"

# ---- one boot per seed -------------------------------------------------------------------
# Less VRAM than guest-tests.sh gives (64M): six workers then fill it, so TTM evicts (and
# importers get move_notify) and the import windows run out of room.
G0_PROPS=",broker=b0" guest_qemu_args 16M
QEMU_ARGS=(-object "sharegpu-broker,id=b0,path=$RUN/broker.sock,vm-name=fuzz" "${QEMU_ARGS[@]}")
ARGS_CSV=$(IFS=,; echo "${FUZZ_ARGS[*]}")
# boot + duration + the fuzzer's own grace (120 s) + module unload, with room for a slow host
BOOT_TIMEOUT=$((DURATION + 600))
passed=0 failed=0
for seed in "${SEEDS[@]}"; do
    log=$LOG_DIR/seed-$seed.log
    say "seed $seed: booting (${DURATION}s of fuzzing, log $log)"
    t0=$SECONDS
    # the fuzzer prints a heartbeat every 10 s, so 120 s of silence means a frozen guest
    GUEST_SILENCE=${GUEST_SILENCE:-120} "$ROOT/scripts/run-guest.sh" \
        --initrd "$RUN/initrd.cpio.gz" --log "$log" --timeout "$BOOT_TIMEOUT" \
        --append "sharegpu.mode=fuzz sharegpu.fuzz.seed=$seed sharegpu.fuzz.duration=$DURATION sharegpu.fuzz.args=$ARGS_CSV" \
        -- "${QEMU_ARGS[@]}" >/dev/null 2>"$RUN/err"
    rc=$?
    secs=$((SECONDS - t0))
    sed 's/^/[guest-fuzz]   /' "$RUN/err" >&2
    tr -d '\r' <"$log" >"$RUN/clean" 2>/dev/null || : >"$RUN/clean"
    verdict=$(grep -aE '^SHAREGPU-FUZZ: (PASS|FAIL)' "$RUN/clean" | tail -n 1)
    qemu_msg=$(grep -aE '^qemu-system-[^:]*: ' "$RUN/clean" | head -n 1)
    why=""
    case $rc in
        0) [[ $verdict == "SHAREGPU-FUZZ: PASS"* ]] || why="no fuzzer verdict in the log" ;;
        5) why="QEMU exited abnormally${qemu_msg:+: $qemu_msg}" ;;
        4) why="guest froze (no console output)" ;;
        3) why="guest did not finish (timeout or guest crash)${qemu_msg:+: $qemu_msg}" ;;
        1)
            step=$(grep -aE '^SHAREGPU-TEST: FAIL' "$RUN/clean" | head -n 1)
            if [[ $verdict == "SHAREGPU-FUZZ: FAIL"* ]]; then
                why="fuzzer: ${verdict#SHAREGPU-FUZZ: FAIL }"
            elif [ -n "$step" ]; then
                why="guest step failed: ${step#SHAREGPU-TEST: FAIL }"
            else
                report=$(grep -a 'KERNEL REPORT' -A1 "$RUN/err" | tail -n 1 | sed 's/^\[run-guest\] *//')
                why="kernel report${report:+: $report}"
            fi ;;
        *) why="run-guest.sh exit $rc${qemu_msg:+: $qemu_msg}" ;;
    esac
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        echo "guest-fuzz: seed $seed PASS (${secs}s) ${verdict#SHAREGPU-FUZZ: PASS seed=$seed }"
    else
        failed=$((failed + 1))
        say "seed $seed: last console lines:"
        tail -n 40 "$RUN/clean" | sed 's/^/[guest-fuzz]   | /' >&2
        echo "guest-fuzz: seed $seed FAIL $why (${secs}s; log $log; replay: scripts/guest-fuzz.sh --no-build --seeds $seed --duration $DURATION)"
    fi
done
verdict "$passed" "$failed"
