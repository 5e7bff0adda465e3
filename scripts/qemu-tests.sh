#!/usr/bin/env bash
# QEMU-side tests of the sharegpu device, in one command (called by scripts/check.sh).
#
#   scripts/qemu-tests.sh [--no-asan] [--asan-only] [--fuzz-iters N] [--fuzz-seed N] [-j N]
#
#   1. default variant: scripts/build-qemu.sh --qtests (cached), then every qtest binary
#      (sharegpu-test, sharegpu-fuzz-test with a short run), the acceptance check and the QMP
#      tools against QEMU (tools below);
#   2. ASan+UBSan variant: scripts/build-qemu.sh --asan --qtests (cached; a cold build of this
#      variant, at -O1, took 7.5 - 8.0 min on 2 idle cores, a device change ~20 s), then
#      sharegpu-test; the fuzz qtest with SHAREGPU_FUZZ_ITERS iterations (default 100000: 1.5 min) starts once both
#      variants are built and runs beside all of it; any sanitizer report (ASan, LSan, UBSan)
#      fails the run.
#   sharegpu-test runs case by case (one process per case, two at a time; its logs are
#      LOGDIR/VARIANT-sharegpu-test-N.log), and the summary line names the slowest cases.
#   TCG reproducers (device/tests/tcg/*.c): multiboot programs booted with -kernel on one TCG
#      vCPU (guest code that qtest cannot run), e.g. the stale-TLB memory-map race.
#   Acceptance check: qemu-system-x86_64 -M q35 -display none -nodefaults -S
#      -device sharegpu,id=g0 -device sharegpu,id=g1,coherent=off -qmp stdio answers
#      query-sharegpu with g0 and g1, and `info sharegpu` (human-monitor-command) shows both.
#
# Prints one line per qtest case (PASS/FAIL [variant] name) and ends with
#   qemu-tests: N passed, M failed
# (N/M count qtest cases from the TAP output, plus the acceptance checks and build steps that
# failed). Exit status 0 only if M = 0. Logs: ${SHAREGPU_CACHE:-~/.cache/sharegpu}/logs/qemu-tests/
#
# Environment: SHAREGPU_FUZZ_ITERS / SHAREGPU_FUZZ_SEED (ASan fuzz run), SHAREGPU_QEMU_TESTS_ASAN=0
# (same as --no-asan), SHAREGPU_JOBS.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" qemu-tests
SAY_TIME=1

logdir=$CACHE/logs/qemu-tests
asan=${SHAREGPU_QEMU_TESTS_ASAN:-1}
default=1
fuzz_iters=${SHAREGPU_FUZZ_ITERS:-100000}
fuzz_seed=${SHAREGPU_FUZZ_SEED:-}
jobs=${SHAREGPU_JOBS:-$(nproc)}

while [ $# -gt 0 ]; do
    case "$1" in
        -j) jobs=$2; shift ;;
        -j*) jobs=${1#-j} ;;
        --no-asan) asan=0 ;;
        --asan-only) default=0; asan=1 ;;
        --fuzz-iters) fuzz_iters=$2; shift ;;
        --fuzz-seed) fuzz_seed=$2; shift ;;
        *) other_arg "$1" ;;
    esac
    shift
done
[ -n "$fuzz_seed" ] || fuzz_seed=$(( $(date +%s) % 1000000 ))

mkdir -p "$logdir"
passed=0
failed=0
pass() { passed=$((passed + 1)); printf '  PASS  [%s] %s\n' "$1" "$2"; }
fail() {
    failed=$((failed + 1)); printf '  FAIL  [%s] %s\n' "$1" "$2"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then
        echo "        log: $3"; tail -n 25 "$3" | sed 's/^/        | /'
    fi
}

# Sanitizer settings for the ASan variant (QEMU and the qtest binaries): stop at the first
# report so the exit status carries it (libqtest fails the test on a non-zero QEMU exit).
sanitizer_env() {
    export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=0:detect_leaks=1:print_summary=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
    export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/device/tests/lsan-suppressions.txt:print_suppressions=0}
}

# qtest_exec VARIANT BINARY LOG [ENV...] [-- ARGS...]: runs one qtest binary in TAP mode, with
# ARGS (e.g. -p PATH filters) after --tap -k; its exit status goes to LOG.rc for qtest_report.
qtest_exec() {
    local variant=$1 bin=$2 log=$3; shift 3
    local qemu=$(dirname "$bin")/bin/qemu-system-x86_64 envs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    # a hang detector, not a budget: under ASan the longest case takes ~80 s and the fuzz run
    # ~4 min on 2 cores, more when the machine is busy
    local limit=900
    [ "$variant" = asan ] && limit=2400
    env ${envs[@]+"${envs[@]}"} QTEST_QEMU_BINARY="$qemu" timeout "$limit" "$bin" --tap -k "$@" \
        >"$log" 2>&1
    echo $? >"$log.rc"
}

# qtest_report VARIANT BINARY LOG SECONDS [quiet]: one PASS/FAIL line per case of LOG, and a
# failure for a sanitizer report, a non-zero exit status or cases planned but never reported;
# then a summary line unless quiet.
qtest_report() {
    local variant=$1 bin=$2 log=$3 secs=$4 quiet=${5:-} rc planned=0 seen=0 line name
    rc=$(cat "$log.rc" 2>/dev/null || echo lost)
    while IFS= read -r line; do
        case "$line" in
            1..*) planned=${line#1..} ;;  # with several -p filters GLib prints a running plan
            "ok "*)
                seen=$((seen + 1)); name=${line#ok }; name=${name#* }
                pass "$variant" "$name" ;;
            "not ok "*)
                seen=$((seen + 1)); name=${line#not ok }; name=${name#* }
                fail "$variant" "$name" "$log" ;;
        esac
    done < <(grep -E '^(1\.\.[0-9]+|ok [0-9]+|not ok [0-9]+)' "$log")
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer' "$log"; then
        fail "$variant" "$(basename "$bin"): sanitizer report" "$log"
    elif [ "$rc" != 0 ] || [ "$seen" -lt "$planned" ] || [ "$seen" = 0 ]; then
        # a crash/abort stops the binary before it reports the case (TAP has no line for it)
        fail "$variant" "$(basename "$bin"): exit status $rc, $seen of $planned cases reported" "$log"
    fi
    [ -n "$quiet" ] || say "$(basename "$bin") [$variant]: $seen cases in ${secs}s (log $log)"
}

# run_qtest VARIANT BINARY LOG [ENV...]: runs one qtest binary and reports its cases.
run_qtest() {
    local t0=$SECONDS
    qtest_exec "$@"
    qtest_report "$1" "$2" "$3" $((SECONDS - t0))
}

# run_qtest_cases VARIANT BINARY LOG: every case of the binary as its own run (-p CASE, log
# LOG-N.log), two at a time: a case is one QEMU and the test binary taking turns (about one
# core, or waiting on the device's timers), and the machine has two. Reports as run_qtest,
# then the slowest cases.
run_qtest_cases() {
    local variant=$1 bin=$2 log=$3 t0=$SECONDS i running=0 cases=() logs=() pids=()
    mapfile -t cases < <(QTEST_QEMU_BINARY="$(dirname "$bin")/bin/qemu-system-x86_64" "$bin" -l |
                         grep '^/')
    if [ ${#cases[@]} = 0 ]; then
        fail "$variant" "$(basename "$bin"): lists no case" ""
        return
    fi
    for i in "${!cases[@]}"; do
        logs[i]=${log%.log}-$i.log
        { local c0=$SECONDS
          qtest_exec "$variant" "$bin" "${logs[i]}" -- -p "${cases[i]}"
          echo "$((SECONDS - c0)) ${cases[i]}" >"${logs[i]}.secs"; } &
        pids+=($!)
        running=$((running + 1))
        if [ "$running" -ge 2 ]; then
            wait -n  # (a run the caller started beside these counts too: a third at most)
            running=$((running - 1))
        fi
    done
    wait "${pids[@]}" 2>/dev/null  # those wait -n reaped are no jobs any more
    for i in "${!cases[@]}"; do
        qtest_report "$variant" "$bin" "${logs[i]}" "$(cut -d' ' -f1 "${logs[i]}.secs")" quiet
    done
    say "$(basename "$bin") [$variant]: ${#cases[@]} cases, two at a time, in $((SECONDS - t0))s" \
        "(logs ${log%.log}-N.log); slowest: $(cat "${logs[@]/%/.secs}" | sort -rn | head -4 |
        awk '{printf "%s%s %ss", (NR > 1 ? ", " : ""), $2, $1}')"
}

# acceptance VARIANT QEMU: the issue's QMP-over-stdio check.
acceptance() {
    local variant=$1 qemu=$2 log=$logdir/$1-acceptance.log
    if python3 - "$qemu" >"$log" 2>&1 <<'EOF'
import json, subprocess, sys
qemu = sys.argv[1]
cmd = [qemu, "-M", "q35", "-display", "none", "-nodefaults", "-S",
       "-device", "sharegpu,id=g0", "-device", "sharegpu,id=g1,coherent=off",
       "-qmp", "stdio", "-L", "/usr/share/qemu", "-L", "/usr/share/seabios"]
print("$", " ".join(cmd))
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

def send(obj):
    print("->", json.dumps(obj)); p.stdin.write(json.dumps(obj) + "\n"); p.stdin.flush()

def recv():
    while True:
        line = p.stdout.readline()
        if not line:
            raise SystemExit("QEMU closed the QMP stream (exit %s)" % p.wait())
        msg = json.loads(line)
        print("<-", line.rstrip()[:2000])
        if "event" not in msg:
            return msg

greeting = recv()
assert "QMP" in greeting, greeting
send({"execute": "qmp_capabilities"}); assert "return" in recv()
send({"execute": "query-sharegpu"}); r = recv()
assert "return" in r, r
devs = {d["id"]: d for d in r["return"]}
assert sorted(devs) == ["g0", "g1"], sorted(devs)
assert devs["g0"]["coherent"] is True and devs["g1"]["coherent"] is False, devs
assert devs["g0"]["vram-size"] == 64 << 20 and devs["g0"]["bo-count"] == 0, devs["g0"]
send({"execute": "human-monitor-command", "arguments": {"command-line": "info sharegpu"}})
r = recv(); out = r["return"]
print(out)
assert "sharegpu g0" in out and "sharegpu g1" in out, out
assert "non-coherent" in out, out
send({"execute": "quit"}); recv()
rc = p.wait(timeout=60)
assert rc == 0, "QEMU exit status %d" % rc
print("acceptance: OK")
EOF
    then
        if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
            fail "$variant" "acceptance: q35 -qmp stdio query-sharegpu + info sharegpu (sanitizer report)" "$log"
        else
            pass "$variant" "acceptance: q35 -qmp stdio query-sharegpu + info sharegpu"
        fi
    else
        fail "$variant" "acceptance: q35 -qmp stdio query-sharegpu + info sharegpu" "$log"
    fi
}

# tools VARIANT QEMU: the project's QMP tools (scripts/qmp_client.py, its --hmp mode that
# run-guest.sh's diagnostics use, and scripts/sharegpu-graph.py --qmp) against a real QEMU.
tools() {
    local variant=$1 qemu=$2 log=$logdir/$1-tools.log dir ok=1 qpid
    dir=$(mktemp -d)
    : >"$log"  # QEMU and the tools append to it
    "$qemu" -M q35 -display none -nodefaults -S -device sharegpu,id=g0 \
        -device sharegpu,id=g1,coherent=off -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
        -L /usr/share/qemu -L /usr/share/seabios >>"$log" 2>&1 &
    qpid=$!
    {
        python3 "$ROOT/scripts/sharegpu-graph.py" --qmp "$dir/qmp.sock" -o "$dir/graph.dot" &&
            grep -q '"dev:g0"' "$dir/graph.dot" && grep -q '"dev:g1"' "$dir/graph.dot" &&
            echo "sharegpu-graph.py --qmp: both devices drawn" || ok=0
        python3 "$ROOT/scripts/qmp_client.py" --hmp "$dir/qmp.sock" 30 "info sharegpu" \
            >"$dir/hmp.txt" && cat "$dir/hmp.txt" &&
            grep -q '^(qemu) info sharegpu$' "$dir/hmp.txt" &&
            grep -q '^sharegpu g1 .*non-coherent' "$dir/hmp.txt" || ok=0
    } >>"$log" 2>&1
    kill "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
    rm -rf "$dir"
    if [ "$ok" = 1 ]; then
        pass "$variant" "tools: sharegpu-graph.py --qmp and qmp_client.py --hmp against QEMU"
    else
        fail "$variant" "tools: sharegpu-graph.py --qmp and qmp_client.py --hmp against QEMU" "$log"
    fi
}

# tcg_reproducers VARIANT QEMU: the multiboot TCG reproducers of device/tests/tcg/ (one vCPU
# running guest code, which qtest cannot do). Each exits QEMU through isa-debug-exit: status 33
# is a pass; an abort (134) or any other status fails, with the debugcon log shown.
tcg_reproducers() {
    local variant=$1 qemu=$2 src name elf log con rc
    local bdir=$logdir/tcg-build
    mkdir -p "$bdir"
    for src in "$ROOT"/device/tests/tcg/*.c; do
        name=$(basename "$src" .c)
        elf=$bdir/$name.elf log=$logdir/$variant-tcg-$name.log con=$logdir/$variant-tcg-$name.con
        if ! { gcc -m32 -march=i686 -ffreestanding -fno-pic -fno-stack-protector \
                   -fno-asynchronous-unwind-tables -nostdlib -O2 -Wall -Wextra -Werror \
                   -I"$ROOT/include" -c "$src" -o "$bdir/$name.o" &&
               ld -m elf_i386 --no-warn-rwx-segments -T "$ROOT/device/tests/tcg/stale-tlb.ld" \
                   -o "$elf" "$bdir/$name.o"; } >"$log" 2>&1; then
            fail "$variant" "tcg $name: build" "$log"
            continue
        fi
        rm -f "$con"
        timeout 120 "$qemu" -M q35 -accel tcg -smp 1 -m 128M -display none -nodefaults \
            -L /usr/share/qemu -L /usr/share/seabios -kernel "$elf" \
            -device sharegpu,id=g0,vram-size=1M -device sharegpu,id=g1,vram-size=1M \
            -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon "file:$con" >>"$log" 2>&1
        rc=$?
        cat "$con" >>"$log" 2>/dev/null
        if [ "$rc" = 33 ] && grep -q ': PASS' "$con" &&
                ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
            pass "$variant" "tcg $name: $(sed -n 's/.*PASS: //p' "$con")"
        else
            echo "QEMU exit status $rc" >>"$log"
            fail "$variant" "tcg $name (QEMU exit status $rc)" "$log"
        fi
    done
}

# build VARIANT ARGS...: prints the output dir (qemu binary's dir) or fails the step.
build() {
    local variant=$1 log=$logdir/$1-build.log t0=$SECONDS bin; shift
    say "building QEMU [$variant] (cached; log $log)"
    if bin=$(nice -n 10 "$ROOT/scripts/build-qemu.sh" "$@" --qtests -j "$jobs" 2>"$log" | tail -1) \
            && [ -x "$bin" ]; then
        say "QEMU [$variant] ready in $((SECONDS - t0))s: $bin"
        out=$(dirname "$bin")
        return 0
    fi
    fail "$variant" "build (scripts/build-qemu.sh $* --qtests)" "$log"
    return 1
}

t_all=$SECONDS
default_out= asan_out=
if [ "$default" = 1 ] && build default; then default_out=$out; fi
if [ "$asan" = 1 ] && build asan --asan; then asan_out=$out; fi
if [ -n "$asan_out" ]; then
    # The ASan fuzz run is the stage's longest step (one core for minutes): it starts first
    # and runs beside everything else (the cases often wait on the device's timers and the
    # broker); reported at the end.
    say "fuzz [asan]: SHAREGPU_FUZZ_SEED=$fuzz_seed SHAREGPU_FUZZ_ITERS=$fuzz_iters (beside the cases)"
    t_fuzz=$SECONDS
    (sanitizer_env
     qtest_exec asan "$asan_out/qtest/sharegpu-fuzz-test" "$logdir/asan-sharegpu-fuzz-test.log" \
         SHAREGPU_FUZZ_ITERS="$fuzz_iters" SHAREGPU_FUZZ_SEED="$fuzz_seed") &
    fuzz_pid=$!
fi
if [ -n "$default_out" ]; then
    out=$default_out
    run_qtest_cases default "$out/qtest/sharegpu-test" "$logdir/default-sharegpu-test.log"
    # fixed seeds (replayable, the coverage floors were set from them) and the run's random one
    for seed in 1 2 3 "$fuzz_seed"; do
        say "fuzz [default]: SHAREGPU_FUZZ_SEED=$seed SHAREGPU_FUZZ_ITERS=5000"
        run_qtest default "$out/qtest/sharegpu-fuzz-test" \
            "$logdir/default-sharegpu-fuzz-test-$seed.log" \
            SHAREGPU_FUZZ_ITERS=5000 SHAREGPU_FUZZ_SEED="$seed"
    done
    acceptance default "$out/qemu-system-x86_64"
    tools default "$out/qemu-system-x86_64"
    tcg_reproducers default "$out/qemu-system-x86_64"
fi
if [ -n "$asan_out" ]; then
    out=$asan_out
    sanitizer_env
    run_qtest_cases asan "$out/qtest/sharegpu-test" "$logdir/asan-sharegpu-test.log"
    wait "$fuzz_pid"
    qtest_report asan "$out/qtest/sharegpu-fuzz-test" "$logdir/asan-sharegpu-fuzz-test.log" \
        $((SECONDS - t_fuzz))
    grep '^# sharegpu fuzz' "$logdir/asan-sharegpu-fuzz-test.log" | sed 's/^/        /'
    acceptance asan "$out/qemu-system-x86_64"
    tcg_reproducers asan "$out/qemu-system-x86_64"
fi
say "total $((SECONDS - t_all))s"
verdict "$passed" "$failed"
