#!/usr/bin/env bash
# IGT's driver-agnostic tests and the kernel's dma-buf selftests against sharegpu, in the guest.
#
# usage: scripts/guest-igt.sh [options] [-- extra qemu args]
#   --no-build       do not run the kernel/QEMU build scripts (use the cached outputs; the
#                    module, IGT (cached) and the image are still made; as guest-tests.sh)
#   --tests "A B"    run only these IGT tests (default: all of TESTS below)
#   --timeout SECS   failure detector for the whole guest run (default 1800)
#   --log FILE       serial console log (default $SHAREGPU_CACHE/logs/guest-igt-<time>.log)
#
# Two boots. The first runs everything on the host's clock except the subtests ICOUNT_GLOB
# of the tests ICOUNT_TESTS (below), which the second, short boot runs with
# -icount shift=0,sleep=off: the guest's clock advances one nanosecond per instruction and
# jumps over idle time, so their deadlines (the syncobj snapshot subtests: 100 ms with a
# 20 ms margin) are met or missed by what the guest executes, not by how loaded the host is; on the host's clock, under TCG with a KASAN +
# lockdep kernel, they missed in most runs. The whole stage on the instruction clock took
# 4.5 minutes against about 3 (one TCG thread for both vCPUs), hence only those subtests.
#
# Steps: scripts/guest-tests.sh --build-only (the cached kernel and QEMU, the driver module),
# scripts/build-igt.sh (IGT 2.0 from Debian trixie's intel-gpu-tools source package, cached),
# scripts/build-guest-image.sh (the tests in /usr/libexec/igt, their libraries in
# /usr/lib/igt with the loader in /lib64, dmabuf_selftests.ko with its depmod files in
# /lib/modules/<release>), then scripts/run-guest.sh boots the same guest as the e2e suite:
# two sharegpu devices (g0, g1) and vgem. Every IGT test runs with IGT_FORCE_DRIVER=sharegpu,
# so it opens the first sharegpu device's node (primary or render, as the test asks), never
# vgem's. `dmabuf` is IGT's wrapper of the kernel's dma-buf selftests: it loads
# dmabuf_selftests.ko once per selftest (dynamic subtests all-tests@<selftest>).
#
# Each subtest is one result, printed here as "PASS|FAIL|SKIP <test>/<subtest> (reason)"; a
# test without subtests is one result under its own name. IGT's exit status 77 and its
# "Subtest X: SKIP" are skips (e.g. a test that needs KMS on a render-only device), printed
# with IGT's "Test requirement" line as the reason. docs/igt.md lists the results, the
# exclusions (EXCLUDE below: printed as skips with their reason) and known failures.
#
# When the package registry does not serve the IGT source (scripts/build-igt.sh exits 3) and no
# SHAREGPU_IGT_SOURCE tarball is given, each IGT test is reported as one skip with that
# reason, and the kernel's dma-buf selftests still run, without IGT: the guest loads
# dmabuf_selftests.ko once per selftest with that selftest's igt__N__NAME=1 parameter (what
# IGT's wrapper does) and reports dmabuf/all-tests@NAME.
#
# The kernel's KUnit suites for DRM code the driver uses (KUNIT_SUITES below: drm_exec and
# drm_mm) run in the same guest: their modules are loaded one after the other and every test
# case of /sys/kernel/debug/kunit/<suite>/results is one result, kunit/<suite>/<case>. KUnit
# taints the kernel with TAINT_TEST (N), which this run allows (run-guest.sh
# --allow-taint-test). TTM's KUnit suites (the kernel has COMPILE_TEST for them: their
# Kconfig allows them only there or on UML, because no other TTM driver may be loaded while
# they run) run last, with sharegpu.ko unloaded and loaded again after them (docs/igt.md).
#
# Output ends with "guest-igt: N passed, M failed, K skipped"; exit status non-zero when M > 0,
# when the guest did not finish, or when scripts/run-guest.sh found a kernel report.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" guest-igt

TESTS=(core_auth core_getclient core_getstats core_getversion core_setmaster dumb_buffer
       syncobj_basic syncobj_wait syncobj_timeline syncobj_eventfd sw_sync dmabuf)
# KUnit modules (drivers/gpu/drm/tests/) of the DRM helpers sharegpu uses, loaded in order
KUNIT_MODULES=(drm_exec_test drm_mm_test)
# TTM's KUnit modules (drivers/gpu/drm/ttm/tests/): no other TTM driver may be loaded while
# they run, so the guest unloads sharegpu.ko first and loads it again afterwards
KUNIT_TTM_MODULES=(ttm_device_test ttm_pool_test ttm_resource_test ttm_tt_test ttm_bo_test
                   ttm_bo_validate_test)
# the two TTM cases that trigger a WARN on purpose (a device without a VMA manager; a
# no-wait reservation with a ww ticket): their WARNs are not kernel reports (run-guest.sh)
ALLOW_WARNS=(--allow-warn-in "ttm_device_init_no_vma_man [ttm_device_test]"
             --allow-warn-in "ttm_bo_reserve_no_wait_ticket [ttm_bo_test]")
# "test/subtest|reason": excluded subtests, reported as skips with the reason (a result IGT
# prints for one anyway is replaced). Keep docs/igt.md in step.
EXCLUDE=()
# dma_fence_chain's wait_backward signals 4096 chained fences in one loop that never
# reschedules: tens of seconds under TCG with lockdep, so the soft-lockup, RCU-stall and
# workqueue watchdogs fire. IGT's runs leave it out (the selftest module's st_filter); it
# runs alone at the end of the boot with those watchdogs off (fence-chain-backward-run below).
DMABUF_ST_FILTER='!dma_fence_chain/wait_backward'
# Subtests retried once, alone, when they fail (docs/igt.md); none at present: the ones that
# needed it (the syncobj snapshot subtests) pass on the guest's instruction clock.
RETRY=()
# subtests run in the second boot, on the guest's instruction clock (above)
ICOUNT_TESTS=" syncobj_wait syncobj_timeline " ICOUNT_GLOB='*-snapshot'
ICOUNT_CLOCK=(-icount shift=0,sleep=off)
BUILD=1 TIMEOUT=1800 LOG=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --tests) read -ra TESTS <<<"$2"; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) other_arg "$1" ;;
    esac
done
mkdir -p "$CACHE/logs"
[ -n "$LOG" ] || LOG=$CACHE/logs/guest-igt-$(date +%Y%m%d-%H%M%S)-$$.log
START=$SECONDS

# ---- builds (guest-tests.sh owns the pipeline: kernel, QEMU, module, guest binaries) -----
BUILD_ARGS=(--build-only)
[ "$BUILD" = 1 ] || BUILD_ARGS+=(--no-build)
"$ROOT/scripts/guest-tests.sh" "${BUILD_ARGS[@]}" >&2 || give_up "build failed"
load_kernel_env || give_up "no cached kernel (scripts/build-guest-kernel.sh)"
find_qemu || give_up "no QEMU at $QEMU"
KDIR=${SHAREGPU_KERNEL_BUILD:?}
RELEASE=${SHAREGPU_KERNEL_RELEASE:?}
SELFTESTS_KO=$KDIR/drivers/dma-buf/dmabuf_selftests.ko
[ -f "$SELFTESTS_KO" ] ||
    give_up "$SELFTESTS_KO missing: the kernel lacks CONFIG_DMABUF_SELFTESTS=m (guest-kernel/config.fragment)"

say "IGT (cached)"
IGT_SKIP=""
IGT=$("$ROOT/scripts/build-igt.sh")  # stdout: the output directory only
case $? in
    0) ;;
    3) IGT=""
       IGT_SKIP="IGT not available: the package registry serves neither intel-gpu-tools/trixie's source nor igt-gpu-tools-tests (set SHAREGPU_IGT_SOURCE to an igt-gpu-tools tarball)"
       say "$IGT_SKIP" ;;
    *) give_up "IGT build failed" ;;
esac

# ---- image -------------------------------------------------------------------------------
make_run_dir igt
IMG_ARGS=(--module "$ROOT/guest-driver/sharegpu.ko" --test-timeout 900)
# dmabuf_selftests.ko where libkmod (IGT) finds it, with depmod's index files
MODROOT=$RUN/modroot
mkdir -p "$MODROOT/lib/modules/$RELEASE/kernel/drivers/dma-buf"
cp "$SELFTESTS_KO" "$MODROOT/lib/modules/$RELEASE/kernel/drivers/dma-buf/"
depmod -b "$MODROOT" "$RELEASE" || give_up "depmod failed"
IMG_ARGS+=(--file "$MODROOT/lib/modules/$RELEASE:/lib/modules/$RELEASE")
# the selftests' parameters, for the run without IGT
modinfo -F parm "$SELFTESTS_KO" | sed -n 's/^\(igt__[0-9]*__[a-z0-9_]*\):.*/\1/p' >"$RUN/dmabuf-selftests"
[ -s "$RUN/dmabuf-selftests" ] || give_up "no igt__N__NAME parameters in $SELFTESTS_KO"
IMG_ARGS+=(--file "$RUN/dmabuf-selftests:/etc/sharegpu/dmabuf-selftests")
# IGT loads the module through libkmod, which adds the options of modprobe.d
echo "options dmabuf_selftests st_filter=$DMABUF_ST_FILTER" >"$RUN/dmabuf_selftests.conf"
IMG_ARGS+=(--file "$RUN/dmabuf_selftests.conf:/etc/modprobe.d/dmabuf_selftests.conf")
# the KUnit modules (and what they need: modinfo's depends), dependencies first
KUNIT_DIR=$RUN/kunit
mkdir -p "$KUNIT_DIR"
: >"$RUN/kunit-modules"
: >"$RUN/kunit-ttm-modules"
add_kunit_module() {  # LIST NAME: NAME.ko after its dependencies, each once in both lists
    local list=$1 name=$2 ko dep
    cat "$RUN/kunit-modules" "$RUN/kunit-ttm-modules" | grep -qx "$name.ko" && return 0
    ko=$(find "$KDIR/drivers" "$KDIR/lib" -name "$name.ko" 2>/dev/null | head -n 1)
    [ -n "$ko" ] || give_up "$name.ko missing: the kernel lacks CONFIG_DRM_KUNIT_TEST=m or CONFIG_DRM_TTM_KUNIT_TEST=m (guest-kernel/config.fragment)"
    for dep in $(modinfo -F depends "$ko" | tr ',' ' '); do add_kunit_module "$list" "$dep"; done
    cp "$ko" "$KUNIT_DIR/"
    echo "$name.ko" >>"$list"
}
for m in "${KUNIT_MODULES[@]}"; do add_kunit_module "$RUN/kunit-modules" "$m"; done
for m in "${KUNIT_TTM_MODULES[@]}"; do add_kunit_module "$RUN/kunit-ttm-modules" "$m"; done
IMG_ARGS+=(--file "$KUNIT_DIR:/usr/lib/sharegpu-kunit"
           --file "$RUN/kunit-modules:/etc/sharegpu/kunit-modules"
           --file "$RUN/kunit-ttm-modules:/etc/sharegpu/kunit-ttm-modules")
printf '%s\n' ${RETRY[@]+"${RETRY[@]}"} >"$RUN/igt-retry"
IMG_ARGS+=(--file "$RUN/igt-retry:/etc/sharegpu/igt-retry")
for e in "${EXCLUDE[@]}"; do echo "${e%%|*}"; done >"$RUN/igt-exclude"
IMG_ARGS+=(--file "$RUN/igt-exclude:/etc/sharegpu/igt-exclude")

# The guest side: runs one IGT test (its output teed to the console), then prints one
# "SHAREGPU-IGT: PASS|FAIL|SKIP test[/subtest] (reason)" line per result and
# "SHAREGPU-IGT-END: test rc=N". A dynamic subtest is test/subtest@dynamic; its parent is
# reported only when it has no dynamic subtest or failed without a failed dynamic subtest. A
# subtest of `--list-subtests` without a result (the test crashed before it) is a failure. A
# failed subtest named in /etc/sharegpu/igt-retry runs once more, alone; it passes only if
# that run passes, and its line says so with the first attempt's output.
cat >"$RUN/igt-run" <<'EOS'
#!/bin/sh
# igt-run TEST [only|except GLOB]: with "only", just the subtests GLOB matches; with
# "except", the others (IGT's --run-subtest, a uwildmat list: "*,!GLOB")
t=$1 mode=${2:-} glob=${3:-}
bin=/usr/libexec/igt/$t
export IGT_FORCE_DRIVER=sharegpu LD_LIBRARY_PATH=/usr/lib/igt
cd /tmp || exit 1
parse() { # LOG RC LIST: result lines "RES name reason"
    awk -v t="$t" -v rc="$2" -v list="$3" '
    function out(res, name, why) {
        if (why != "") why = " (" substr(why, 1, 300) ")"
        printf "%s %s%s\n", res, name, why; n++
    }
    function res(word) { return word == "SUCCESS" ? "PASS" : (word == "SKIP" ? "SKIP" : "FAIL") }
    BEGIN { while ((getline l < list) > 0) if (l != "") { listed[++nl] = l } }
    /^Starting subtest: / { cur = substr($0, 19); req = ""; started[cur] = 1; next }
    /^Starting dynamic subtest: / { hasdyn[cur] = 1; req = ""; next }
    /^Test requirement not met/ { req = ""; inreq = 1; next }
    inreq && /^(Subtest|Dynamic subtest|Starting) / { inreq = 0 }
    inreq { req = req (req == "" ? "" : " ") $0; next }
    /CRITICAL: (Failed assertion|error|Test assertion failure)/ { crit = crit (crit == "" ? "" : "; ") $0 }
    /^Dynamic subtest [^:]*: [A-Z]+/ {
        s = substr($0, 17); i = index(s, ": "); name = substr(s, 1, i - 1)
        split(substr(s, i + 2), w, " "); r = res(w[1])
        if (r == "FAIL") dynfail[cur] = 1
        out(r, t "/" cur "@" name, r == "SKIP" ? req : (r == "FAIL" ? w[1] ": " crit : ""))
        req = ""; crit = ""; next
    }
    /^Subtest [^:]*: [A-Z]+/ {
        s = substr($0, 9); i = index(s, ": "); name = substr(s, 1, i - 1)
        split(substr(s, i + 2), w, " "); r = res(w[1]); done[name] = 1
        if (!hasdyn[name] || (r == "FAIL" && !dynfail[name]))
            out(r, t "/" name, r == "SKIP" ? req : (r == "FAIL" ? w[1] ": " crit : ""))
        crit = ""; next
    }
    END {
        for (s in started) if (!(s in done)) {
            out("FAIL", t "/" s, "no result: exit " rc ": " crit); done[s] = 1 }
        for (i = 1; i <= nl; i++) if (!(listed[i] in done))
            out("FAIL", t "/" listed[i], "did not run: the test ended early, exit " rc)
        if (!n) {
            if (rc == 0) out("PASS", t, "")
            else if (rc == 77) out("SKIP", t, req)
            else out("FAIL", t, "exit " rc ": " crit)
        }
    }' "$1"
}
run() { # LOG ARGS...: runs the test, output to the console and LOG; prints the exit status
    log=$1; shift
    ( timeout -s KILL 800 "$bin" "$@" </dev/null; echo $? >"$log.rc" ) 2>&1 | tee "$log" >&2
    cat "$log.rc" 2>/dev/null || echo 255
}
echo "SHAREGPU-IGT-START: $t"
"$bin" --list-subtests >/tmp/igt-$t.all 2>/dev/null || : >/tmp/igt-$t.all
while read -r n; do  # --list-subtests ignores --run-subtest: the list is filtered here
    case $n in $glob) m=1 ;; *) m=0 ;; esac
    case "$mode:$m" in only:1|except:0|:*) echo "$n" ;; esac
done </tmp/igt-$t.all >/tmp/igt-$t.list
case $mode in
    only) set -- --run-subtest "$glob" ;;
    except) set -- --run-subtest "*,!$glob" ;;
    *) set -- ;;
esac
rc=$(run /tmp/igt-$t.log "$@")
parse /tmp/igt-$t.log "$rc" /tmp/igt-$t.list >/tmp/igt-$t.res
fails=0
while read -r r name why; do
    if [ "$r" = FAIL ] && grep -qxF "$name" /etc/sharegpu/igt-retry 2>/dev/null; then
        sub=${name#*/}
        echo "SHAREGPU-IGT: retrying $name once (timing-sensitive under TCG): $why"
        rrc=$(run /tmp/igt-retry.log --run-subtest "$sub")
        : >/tmp/igt-retry.list
        rr=$(parse /tmp/igt-retry.log "$rrc" /tmp/igt-retry.list | grep -F " $name" | head -n 1)
        if [ "${rr%% *}" = PASS ]; then
            r=PASS why="(passed on retry; first attempt: ${why#(}"
        else
            why="$why; retry: ${rr#* }"
        fi
    fi
    # IGT >= 2.1 skips dma_fence_chain below 25000 bogomips (its wait_backward case, which
    # st_filter leaves out here, is slow): load the selftest as IGT would, with the filter
    case "$r $name $why" in
    "SKIP dmabuf/all-tests@"*bogomips*)
        p=$(grep -x "igt__[0-9]*__${name#dmabuf/all-tests@}" /etc/sharegpu/dmabuf-selftests)
        ko=$(find /lib/modules/$(uname -r) -name dmabuf_selftests.ko)
        filter=$(sed -n 's/.*st_filter=//p' /etc/modprobe.d/dmabuf_selftests.conf)
        if [ -n "$p" ] && insmod "$ko" "$p=1" "st_filter=$filter"; then
            rmmod dmabuf_selftests
            r=PASS why="(loaded by insmod $p=1 st_filter=$filter: IGT skips it $why)"
        else
            r=FAIL why="(insmod ${p:-<no parameter>}=1 failed, see dmesg; IGT skips it $why)"
        fi ;;
    esac
    # excluded (the host reports it as a skip with the reason): not a failure of this run
    grep -qxF "$name" /etc/sharegpu/igt-exclude 2>/dev/null || { [ "$r" = FAIL ] && fails=$((fails + 1)); }
    echo "SHAREGPU-IGT: $r $name${why:+ $why}"
done </tmp/igt-$t.res
echo "SHAREGPU-IGT-END: $t rc=$rc"
[ "$fails" = 0 ]
EOS
# Without IGT: the kernel's dma-buf selftests one by one, as IGT's dmabuf test runs them.
cat >"$RUN/dmabuf-selftests-run" <<'EOS'
#!/bin/sh
ko=$(find /lib/modules/$(uname -r) -name dmabuf_selftests.ko)
echo "SHAREGPU-IGT-START: dmabuf"
rc=0
while read -r p; do
    name=${p#igt__*__}
    if insmod "$ko" "$p=1" "st_filter=$(sed -n 's/.*st_filter=//p' /etc/modprobe.d/dmabuf_selftests.conf)"; then
        echo "SHAREGPU-IGT: PASS dmabuf/all-tests@$name"
        rmmod dmabuf_selftests
    else
        echo "SHAREGPU-IGT: FAIL dmabuf/all-tests@$name (insmod $p=1 failed: see dmesg above)"
        rc=1
    fi
done </etc/sharegpu/dmabuf-selftests
echo "SHAREGPU-IGT-END: dmabuf rc=$rc"
exit $rc
EOS
# KUnit: load the modules, then one result per test case of every suite's results file (the
# cases are at KTAP's first indentation; "# SKIP" marks a skipped one).
cat >"$RUN/kunit-run" <<'EOS'
#!/bin/sh
echo "SHAREGPU-IGT-START: kunit"
rc=0
while read -r ko; do
    insmod "/usr/lib/sharegpu-kunit/$ko" ||
        { echo "SHAREGPU-IGT: FAIL kunit/$ko (insmod failed: see dmesg above)"; rc=1; }
done </etc/sharegpu/kunit-modules
# TTM's suites with no TTM driver loaded: sharegpu.ko goes, and comes back for the unload
# check at the end of the boot
if rmmod sharegpu; then
    while read -r ko; do
        insmod "/usr/lib/sharegpu-kunit/$ko" ||
            { echo "SHAREGPU-IGT: FAIL kunit/$ko (insmod failed: see dmesg above)"; rc=1; }
    done </etc/sharegpu/kunit-ttm-modules
    # as the image's init loaded it (its line in /etc/sharegpu/modules: the file's name)
    ko=$(grep -m1 'sharegpu\.ko' /etc/sharegpu/modules | cut -d' ' -f1)
    insmod "/lib/modules/sharegpu/$ko" ||
        { echo "SHAREGPU-IGT: FAIL kunit (sharegpu.ko does not load again after TTM's suites)"; rc=1; }
else
    echo "SHAREGPU-IGT: FAIL kunit/ttm (rmmod sharegpu failed: TTM's suites not run)"; rc=1
fi
found=0
for r in /sys/kernel/debug/kunit/*/results; do
    [ -f "$r" ] || continue
    found=1
    suite=${r%/results}; suite=${suite##*/}
    cat "$r"
    awk -v s="$suite" '
        /^    (not )?ok [0-9]+ / {
            line = substr($0, 5); res = "PASS"
            if (line ~ /^not ok/) { res = "FAIL"; line = substr(line, 8) } else line = substr(line, 4)
            sub(/^[0-9]+ /, "", line); why = ""
            i = index(line, " # "); if (i) { why = substr(line, i + 3); line = substr(line, 1, i - 1) }
            if (why ~ /^SKIP/) res = "SKIP"
            print "SHAREGPU-IGT: " res " kunit/" s "/" line (why != "" ? " (" why ")" : "")
            if (res == "FAIL") bad = 1
        }
        END { exit bad }' "$r" || rc=1
done
[ "$found" = 1 ] || { echo "SHAREGPU-IGT: FAIL kunit (no suite in /sys/kernel/debug/kunit)"; rc=1; }
echo "SHAREGPU-IGT-END: kunit rc=$rc"
exit $rc
EOS
# dma_fence_chain's wait_backward alone (DMABUF_ST_FILTER above), with the kernel's watchdogs
# for a CPU that does not schedule switched off while it runs, and back on afterwards: the
# loop is kernel code only (dma-fence-chain), correct but long under TCG.
cat >"$RUN/fence-chain-backward-run" <<'EOS'
#!/bin/sh
name=dmabuf/all-tests@dma_fence_chain/wait_backward
echo "SHAREGPU-IGT-START: fence-chain-backward"
ko=$(find /lib/modules/$(uname -r) -name dmabuf_selftests.ko)
p=$(grep -x 'igt__[0-9]*__dma_fence_chain' /etc/sharegpu/dmabuf-selftests)
knobs="/proc/sys/kernel/soft_watchdog=0 /proc/sys/kernel/hung_task_timeout_secs=0
       /sys/module/rcupdate/parameters/rcu_cpu_stall_suppress=1
       /sys/module/workqueue/parameters/watchdog_thresh=0"
saved=""
for k in $knobs; do
    f=${k%=*}
    [ -w "$f" ] || { echo "SHAREGPU-IGT: FAIL $name (no $f to switch off)"; exit 1; }
    saved="$saved $f=$(cat "$f")"
    echo "${k#*=}" >"$f"
done
t0=$(cut -d' ' -f1 /proc/uptime)
if [ -n "$p" ] && insmod "$ko" "$p=1" "st_filter=dma_fence_chain/wait_backward"; then
    rmmod dmabuf_selftests
    r=PASS
else
    r=FAIL
fi
t1=$(cut -d' ' -f1 /proc/uptime)
for k in $saved; do echo "${k#*=}" >"${k%=*}"; done
echo "SHAREGPU-IGT: $r $name (alone by insmod ${p:-<no parameter>}=1 st_filter=dma_fence_chain/wait_backward, the soft-lockup, hung-task, RCU-stall and workqueue watchdogs off: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s)"
echo "SHAREGPU-IGT-END: fence-chain-backward rc=$([ $r = PASS ] && echo 0 || echo 1)"
[ $r = PASS ]
EOS
chmod +x "$RUN/igt-run" "$RUN/dmabuf-selftests-run" "$RUN/kunit-run" "$RUN/fence-chain-backward-run"

RAN=()  # tests the guest runs (the others are reported as skipped here)
ICOUNT_RAN=() ICOUNT_ARGS=()  # the second boot's
if [ -n "$IGT" ]; then
    IMG_ARGS+=(--file "$RUN/igt-run:/usr/libexec/igt/igt-run"
               --file "$IGT/lib:/usr/lib/igt"
               --file "$IGT/lib/ld-linux-x86-64.so.2:/lib64/ld-linux-x86-64.so.2")
    ICOUNT_ARGS=("${IMG_ARGS[@]}")
    mkdir -p "$RUN/icount"
    for t in "${TESTS[@]}"; do
        [ -x "$IGT/bin/$t" ] || give_up "$IGT/bin/$t missing"
        IMG_ARGS+=(--file "$IGT/bin/$t:/usr/libexec/igt/$t")
        glob=""
        [[ $ICOUNT_TESTS != *" $t "* ]] || glob=$ICOUNT_GLOB
        printf '#!/bin/sh\nexec /usr/libexec/igt/igt-run %s%s\n' "$t" \
            "${glob:+ except '$glob'}" >"$RUN/igt-$t"
        chmod +x "$RUN/igt-$t"
        IMG_ARGS+=(--test "$RUN/igt-$t")
        RAN+=("$t")
        [ -n "$glob" ] || continue
        printf "#!/bin/sh\nexec /usr/libexec/igt/igt-run %s only '%s'\n" "$t" "$glob" \
            >"$RUN/icount/igt-$t"
        chmod +x "$RUN/icount/igt-$t"
        ICOUNT_ARGS+=(--file "$IGT/bin/$t:/usr/libexec/igt/$t" --test "$RUN/icount/igt-$t")
        ICOUNT_RAN+=("$t")
    done
else
    for t in "${TESTS[@]}"; do
        [ "$t" = dmabuf ] || continue
        IMG_ARGS+=(--test "$RUN/dmabuf-selftests-run")
        RAN+=(dmabuf)
    done
fi
IMG_ARGS+=(--test "$RUN/kunit-run" --test "$RUN/fence-chain-backward-run")
RAN+=(kunit fence-chain-backward)
IMG=$RUN/initrd.cpio.gz
"$ROOT/scripts/build-guest-image.sh" --out "$IMG" "${IMG_ARGS[@]}" >&2 || give_up "image build failed"
if [ ${#ICOUNT_RAN[@]} -gt 0 ]; then
    "$ROOT/scripts/build-guest-image.sh" --out "$RUN/icount.cpio.gz" "${ICOUNT_ARGS[@]}" >&2 ||
        give_up "image build failed (instruction-clock boot)"
fi

# ---- boots --------------------------------------------------------------------------------
guest_qemu_args 64M
boot() {  # LOG IMAGE [QEMU ARGS...]: one guest run; its run-guest.sh status in RC_BOOT
    local log=$1 img=$2 t0=$SECONDS
    shift 2
    say "booting${*:+ with $*} (log $log)"
    "$ROOT/scripts/run-guest.sh" --kernel "$SHAREGPU_KERNEL_IMAGE" --initrd "$img" --log "$log" \
        --timeout "$TIMEOUT" --allow-taint-test "${ALLOW_WARNS[@]}" -- "${QEMU_ARGS[@]}" \
        "$@" ${EXTRA[@]+"${EXTRA[@]}"}
    RC_BOOT=$?
    say "guest run: $((SECONDS - t0))s"
    case $RC_BOOT in
        0) ;;
        1) say "run-guest.sh: a test failed or a kernel report (lockdep/KASAN/WARN/oops) in $log" ;;
        3) say "run-guest.sh: the guest did not finish (timeout/crash), see $log" ;;
        *) say "run-guest.sh exit $RC_BOOT, see $log" ;;
    esac
}
boot "$LOG" "$IMG"
RC=$RC_BOOT
ICOUNT_LOG=${LOG%.log}-icount.log
if [ ${#ICOUNT_RAN[@]} -gt 0 ]; then
    boot "$ICOUNT_LOG" "$RUN/icount.cpio.gz" "${ICOUNT_CLOCK[@]}"
    [ "$RC" != 0 ] || RC=$RC_BOOT
fi

# ---- verdict -----------------------------------------------------------------------------
printf '%s\n' ${EXCLUDE[@]+"${EXCLUDE[@]}"} >"$RUN/exclude"
tally() {  # LOG RAN ALL: prints the results of one boot; "passed failed skipped" on stderr
    tr -d '\r' <"$1" | awk -v ran="$2" -v all="$3" -v noigt="$IGT_SKIP" \
        -v exfile="$RUN/exclude" '
    BEGIN {
        while ((getline line < exfile) > 0) if (line != "") {
            i = index(line, "|"); ex[substr(line, 1, i - 1)] = substr(line, i + 1) }
    }
    function rest(line, tag,   i) { i = index(line, tag); return substr(line, i + length(tag)) }
    /SHAREGPU-IGT: (PASS|FAIL|SKIP) / {
        s = rest($0, "SHAREGPU-IGT: "); r = substr(s, 1, 4); s = substr(s, 6)
        i = index(s, " "); name = (i ? substr(s, 1, i - 1) : s); why = (i ? substr(s, i + 1) : "")
        if (name in ex) { r = "SKIP"; why = "(excluded: " ex[name] ")" }
        seen[name] = 1
        print r " " name (why != "" ? " " why : "")
        if (r == "PASS") p++; else if (r == "SKIP") k++; else f++
        next
    }
    /SHAREGPU-IGT-END: / { split(rest($0, "SHAREGPU-IGT-END: "), w, " "); ended[w[1]] = 1 }
    END {
        for (name in ex) if (!(name in seen)) {
            split(name, tn, "/"); if (!(tn[1] in ended)) continue
            print "SKIP " name " (excluded: " ex[name] ")"; k++ }
        nr = split(ran, rl, " "); for (i = 1; i <= nr; i++) isran[rl[i]] = 1
        for (i = 1; i <= nr; i++) if (!(rl[i] in ended)) {
            print "FAIL " rl[i] " (never finished: crashed, killed or the guest stopped)"; f++ }
        na = split(all, al, " ")
        for (i = 1; i <= na; i++) if (!(al[i] in isran)) { print "SKIP " al[i] " (" noigt ")"; k++ }
        printf "%d %d %d\n", p, f, k > "/dev/stderr"
    }'
}
tally "$LOG" "${RAN[*]}" "${TESTS[*]}" 2>"$RUN/counts" | sed 's/^/[guest-igt]   /' >&2
if [ ${#ICOUNT_RAN[@]} -gt 0 ]; then
    say "on the instruction clock (${ICOUNT_CLOCK[*]}):"
    tally "$ICOUNT_LOG" "${ICOUNT_RAN[*]}" "${ICOUNT_RAN[*]}" 2>>"$RUN/counts" |
        sed 's/^/[guest-igt]   /' >&2
fi
PASSED=0 FAILED=0 SKIPPED=0 n=0
while read -r p f k; do
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + k)) n=$((n + 1))
done <"$RUN/counts"
[ "$n" -gt 0 ] || FAILED=1
# a failed run with every subtest passing still fails the stage (a kernel report, a crash)
if [ "$RC" != 0 ] && [ "$FAILED" = 0 ]; then FAILED=1; say "counted as one failure: the guest run failed"; fi
say "$((SECONDS - START))s in all; log: $LOG${ICOUNT_RAN[*]:+ and $ICOUNT_LOG}"
verdict "$PASSED" "$FAILED" "$SKIPPED"
