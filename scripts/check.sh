#!/usr/bin/env bash
# `make check`: every test of the project, from a clean clone on a fresh Debian 12 machine.
#   1. installs what it needs (scripts/setup-host.sh)
#   2. host backend: builds and runs the GoogleTest suites plain, under ThreadSanitizer and
#      under ASan+UBSan (separate build dirs: build/, build-tsan/, build-asan/)
#   3. backend benchmarks, five short repetitions in random order: prints the `ratio NAME VALUE`
#      lines (the ratio of the medians)
#   4. QEMU: builds (cached) QEMU 10 with the device, plain and ASan+UBSan, runs the qtests on
#      both, the randomized register/ring fuzz qtest under ASan and the monitor acceptance
#      check (scripts/qemu-tests.sh)
#   5. guest: builds (cached) the debug guest kernel, QEMU with the device, the driver and the
#      static GoogleTest e2e binaries, boots QEMU with two sharegpu devices and vgem and runs
#      them (scripts/guest-tests.sh); then the stateful ioctl fuzzer in the same guest for
#      three fixed seeds and one random seed, one boot each (scripts/guest-fuzz.sh); and
#      sharing between VMs: the broker daemon and three guests (scripts/guest-multivm.sh)
#   6. the guest runner's self-test: a frozen guest is reported with QEMU's backtraces, an
#      aborted QEMU as a failure (scripts/run-guest-selftest.sh, cached kernel + QEMU)
# Ends with `check: N passed, M failed` (test cases over all stages); exit status non-zero
# when anything failed.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" check
[ $# = 0 ] || other_arg "$1"  # no options: --help prints this header
cd "$ROOT"

bash scripts/setup-host.sh || give_up "setup failed"
use_ccache

failed_stages=()
results=()
extra_totals=()

stage() { printf '\n=== %s ===\n' "$*"; }

# meson_suite DIR [meson setup args...]: configure, build, test; records JUnit results.
meson_suite() {
    local dir=$1; shift
    meson_configure "$dir" "$@" || { failed_stages+=("$dir: configure"); return 1; }
    nice ninja -C "$dir" || { failed_stages+=("$dir: build"); return 1; }
    meson test -C "$dir" --suite backend --print-errorlogs --num-processes 2 ||
        failed_stages+=("$dir: tests")
    results+=("$dir/meson-logs/testlog.junit.xml")
}

# script_stage NAME WHAT [ARGS...]: runs scripts/NAME.sh (output also in build/NAME.out), records
# WHAT as a failed stage when it fails, and its closing "NAME: N passed, M failed" line
script_stage() {
    local name=$1 what=$2; shift 2
    bash "scripts/$name.sh" "$@" 2>&1 | tee "build/$name.out"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages+=("$what")
    extra_totals+=("$(grep -h "^$name: [0-9]* passed, [0-9]* failed" "build/$name.out" | tail -1)")  # ", K skipped" too
}

stage "host backend: plain build and tests"
meson_suite build

stage "host backend: ThreadSanitizer"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" meson_suite build-tsan -Db_sanitize=thread

stage "host backend: AddressSanitizer + UndefinedBehaviorSanitizer"
# at -O1, as ASan's documentation suggests: -O2 compiled three times slower (11 of a cold run's
# minutes) and finds nothing more
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    meson_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false -Doptimization=1

stage "host backend: benchmarks (short run; ratios against same-run baselines)"
for b in bench/ww_bench bench/copy_bench bench/sharing_bench bench/scale_bench bench/engine_bench \
         broker/broker_bench; do
    # five repetitions in random order, the ratio of the medians: a burst of host noise
    # lands in one repetition of one benchmark, not in a ratio (ratio_reporter.h)
    if ! "./build/host-backend/$b" --benchmark_min_time=0.05 --benchmark_repetitions=5 \
            --benchmark_enable_random_interleaving=true | tee "build/${b#*/}.out"; then
        failed_stages+=("benchmark ${b#*/}")
    fi
done
echo "--- ratio lines"
grep -h '^ratio ' build/*_bench.out || failed_stages+=("benchmarks printed no ratio line")

stage "QEMU device: qtests, randomized fuzz under ASan, monitor acceptance"
script_stage qemu-tests "qemu tests"

stage "guest: end-to-end tests (debug kernel, driver, two devices + vgem under QEMU TCG)"
# Heavy artefacts are cached by input hash; a fresh machine builds them here.
script_stage guest-tests "guest tests"

stage "guest: sharing between VMs (broker daemon + three guests; revocation by kill -9 of the exporter)"
script_stage guest-multivm "guest multi-VM"

stage "guest: ioctl fuzzer (fixed seeds + one random seed; a failed seed prints its replay command)"
# 4 boots of about a minute each (40 s of fuzzing), ~4 min on a 2-core machine (docs/user-guide.md,
# "Fuzzing the driver")
script_stage guest-fuzz "guest fuzz" --seeds "1 2 3" --random 1 --duration 40

stage "guest: IGT's driver-agnostic tests and the kernel's dma-buf selftests against sharegpu (docs/igt.md)"
script_stage guest-igt "guest IGT"

stage "guest runner: silence watchdog, QEMU crash and kernel-report detection (self-test)"
script_stage run-guest-selftest "run-guest self-test"

# Test-case totals over every JUnit file (meson parses each gtest binary's cases).
python3 - "${results[@]}" <<'PY' >build/check-totals.txt
import sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except Exception:
        failed += 1
        continue
    for case in root.iter('testcase'):
        if case.find('failure') is not None or case.find('error') is not None:
            failed += 1
        elif case.find('skipped') is not None:
            skipped += 1
        else:
            passed += 1
print(passed, failed, skipped)
PY
read -r passed failed skipped <build/check-totals.txt
for line in "${extra_totals[@]}"; do  # "<stage>: N passed, M failed" of the non-meson stages
    if [[ $line =~ :\ ([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)? ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
    else
        failed=$((failed + 1))  # the stage printed no verdict
    fi
done
failed=$((failed + ${#failed_stages[@]}))

printf '\n'
for s in "${failed_stages[@]}"; do echo "FAILED: $s"; done
verdict "$passed" "$failed" "$skipped"
