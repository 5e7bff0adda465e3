#!/usr/bin/env bash
# Boots the sharegpu guest kernel + initramfs under QEMU TCG (q35) and checks the result.
#
# usage: scripts/run-guest.sh --initrd IMG.cpio.gz [options] [-- extra qemu args...]
#        scripts/run-guest.sh --check-log LOG     judge an existing console log (no QEMU)
#   --kernel BZIMAGE   default: SHAREGPU_KERNEL_IMAGE from
#                      ${SHAREGPU_CACHE:-~/.cache/sharegpu}/kernel/current/kernel.env
#   --initrd FILE      initramfs from scripts/build-guest-image.sh (required)
#   --log FILE         serial console log (default: $SHAREGPU_CACHE/logs/guest-<time>.log);
#                      QEMU's own stderr follows it, after "[run-guest] QEMU's stderr:"
#   --timeout SECS     failure detector for a hung guest (default $GUEST_TIMEOUT or 900);
#                      0 = none. The guest powers itself off when done.
#   --silence SECS     failure detector for a frozen guest: no console output for SECS
#                      (default $GUEST_SILENCE or 300); 0 = none. A guest that is quiet for
#                      long on purpose must print a heartbeat.
#   --append "ARGS"    extra kernel command line (e.g. sharegpu.mode=shell)
#   --interactive      console on the terminal (for --init-mode shell/demo); no timeout and
#                      no silence watchdog
#   --smp N / --mem M  default 2 / 1G
#   --profile REPORT   samples the vCPUs' instruction pointers (25 Hz) through a QMP socket
#                      of its own and writes the guest kernel's profile by function to
#                      REPORT when QEMU exits (scripts/guest-profile.py); the guest prints
#                      its modules' functions at boot (sharegpu.kallsyms=1) to name theirs;
#                      $GUEST_PROFILE_ARGS go to the profiler (e.g. --offsets --top 50)
#   --allow-taint-test the kernel may be tainted with TAINT_TEST (N: KUnit modules loaded)
#   --allow-warn-in 'FUNC [MODULE]'   a WARN whose report (from "cut here" to "end trace")
#                      names FUNC+0x... of MODULE (a KUnit case that triggers that WARN on
#                      purpose) is not a kernel report, and its W taint is allowed; counted
#                      and shown. Repeatable. Any other WARN still fails the run
# Everything after "--" goes to QEMU verbatim, e.g.  -- -device sharegpu
# The runner always adds a QMP socket of its own in its temp dir (for the diagnostics below)
# and "-serial mon:stdio" unless the extra args have -serial. It boots with -nodefaults: q35's
# default empty CD-ROM makes SeaBIOS wait 32 s (an AHCI command timeout under TCG) before the
# kernel starts, on every boot.
# QEMU binary: $QEMU, else $SHAREGPU_CACHE/qemu/current/qemu-system-x86_64, else
# qemu-system-x86_64 from PATH.
#
# On a timeout or a silence, BEFORE killing QEMU the runner appends to the log QEMU's thread
# backtraces (gdb -p PID, "thread apply all bt") and the monitor's "info status",
# "info sharegpu" and "info registers -a"; a condensed excerpt goes to stderr.
#
# Exit status: 0 = guest printed "SHAREGPU-SUMMARY: PASS", QEMU exited with status 0 and the
# log has no kernel report; 1 = tests failed or kernel report (lockdep, KASAN, UBSAN,
# WARNING, Oops, BUG, panic, soft lockup, hung task, RCU stall, workqueue lockup; the
# guest's final SHAREGPU-KERNEL-STATE line showing a taint other than O/E or debug_locks 0);
# 2 = usage error; 3 = no summary (timeout, guest crash or reboot);
# 4 = FROZEN: no console output for --silence seconds;
# 5 = QEMU exited abnormally: killed by a signal (e.g. SIGABRT from an assertion) or a
#     non-zero exit status.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" run-guest
DIE_STATUS=2  # every early stop is exit 2

KERNEL="" INITRD="" LOG="" APPEND="" INTERACTIVE=0 SMP=2 MEM=1G CHECK_LOG="" PROFILE=""
TIMEOUT=${GUEST_TIMEOUT:-900}
ALLOWED_TAINT=$(((1 << 12) | (1 << 13)))  # O and E: out-of-tree, unsigned modules
SILENCE=${GUEST_SILENCE:-300}
EXTRA=() ALLOW_WARN_IN=()

while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) KERNEL=$2; shift 2 ;;
        --initrd) INITRD=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --allow-taint-test) ALLOWED_TAINT=$((ALLOWED_TAINT | (1 << 18))); shift ;;
        --allow-warn-in) ALLOW_WARN_IN+=("$2"); shift 2 ;;
        --silence) SILENCE=$2; shift 2 ;;
        --append) APPEND="$APPEND $2"; shift 2 ;;
        --interactive) INTERACTIVE=1; shift ;;
        --smp) SMP=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --profile) PROFILE=$2; shift 2 ;;
        --check-log) CHECK_LOG=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) other_arg "$1" ;;
    esac
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout wants whole seconds, got '$TIMEOUT'"
[[ $SILENCE =~ ^[0-9]+$ ]] || die "--silence wants whole seconds, got '$SILENCE'"

make_run_dir run
QEMU_PID=""
at_exit '[ -z "$QEMU_PID" ] || kill -KILL "$QEMU_PID" 2>/dev/null'
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- diagnostics of a stuck guest (QEMU still running) ----------------------------------
qemu_backtraces() { # $1 = QEMU pid
    if ! command -v gdb >/dev/null; then
        echo "NO BACKTRACES: gdb is not installed (scripts/setup-host.sh installs it)"
        return
    fi
    local out rc=0
    out=$(timeout -k 5 120 gdb -nx -batch -p "$1" -iex 'set debuginfod enabled off' \
        -ex 'set pagination off' -ex 'thread apply all bt' 2>&1) || rc=$?
    printf '%s\n' "$out"
    if grep -qiE 'ptrace: Operation not permitted|Could not attach' <<<"$out"; then
        echo "NO BACKTRACES: gdb could not attach to QEMU (pid $1): ptrace refused" \
            "(uid $(id -u), kernel.yama.ptrace_scope=$(cat /proc/sys/kernel/yama/ptrace_scope \
            2>/dev/null || echo n/a)). Run as root or set kernel.yama.ptrace_scope=0; in a" \
            "container, grant CAP_SYS_PTRACE."
    elif ! grep -qE '^Thread [0-9]+ ' <<<"$out"; then
        echo "NO BACKTRACES: gdb printed no thread (exit status $rc; 124 = took over 120 s)"
    fi
}

# HMP commands through the runner's QMP socket; says so when the main loop does not answer.
monitor_commands() { # $1 = seconds to wait for each answer, then HMP command lines
    python3 "$ROOT/scripts/qmp_client.py" --hmp "$RUN/qmp.sock" "$@"
}

collect_diagnostics() { # $1 = why; writes $RUN/diag.{bt,mon,regs}
    say "$1: collecting QEMU thread backtraces (gdb) and monitor state, then killing QEMU"
    qemu_backtraces "$QEMU_PID" >"$RUN/diag.bt"
    monitor_commands 10 "info status" "info sharegpu" >"$RUN/diag.mon"
    if grep -q '^NO MONITOR ANSWER' "$RUN/diag.mon"; then
        : >"$RUN/diag.regs"
    else
        monitor_commands 10 "info registers -a" >"$RUN/diag.regs"
    fi
    {
        echo
        echo "==== run-guest diagnostics: $1 ===="
        echo "---- QEMU thread backtraces (gdb -p $QEMU_PID: thread apply all bt) ----"
        cat "$RUN/diag.bt"
        echo "---- QEMU monitor ----"
        cat "$RUN/diag.mon" "$RUN/diag.regs"
        echo "==== end of run-guest diagnostics ===="
    } >"$RUN/diag"
}

# stderr excerpt: per thread frame #0 and the next 5 frames outside libc/glib, as
# "function at file:line"; then the monitor's answers.
print_diagnostics_excerpt() {
    awk '/^Thread [0-9]+ / { n = 0; print; next }
         /^#[0-9]+ / {
             f = $0; sub(/^#[0-9]+ +(0x[0-9a-f]+ in )?/, "", f); where = ""
             if (match(f, / (at|from) [^ ]+$/)) where = substr(f, RSTART)
             if ($1 != "#0" && where ~ /^ (from |at \.\/|at \.\.\/sysdeps\/|at \/usr\/include\/)/) next
             if (++n > 6) next
             sub(/ \(.*$/, "", f); printf "  %s %s%s\n", $1, f, where }
         /^NO BACKTRACES/' "$RUN/diag.bt" | head -n 80 | sed 's/^/[run-guest]   /' >&2
    head -n 30 "$RUN/diag.mon" | sed 's/^/[run-guest]   /' >&2
    say "full backtraces and monitor output (info registers -a too) at the end of $LOG"
}

stop_qemu() {
    kill -TERM "$QEMU_PID" 2>/dev/null || return 0
    local deadline=$((SECONDS + 10))
    while kill -0 "$QEMU_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$QEMU_PID" 2>/dev/null || true
}

# ---- run --------------------------------------------------------------------------------
ENDED=exited  # exited | frozen | timeout
rc=0 ELAPSED=0 LONGEST_SILENCE=""
if [ -n "$CHECK_LOG" ]; then
    [ -f "$CHECK_LOG" ] || die "--check-log $CHECK_LOG: no such file"
    LOG=$CHECK_LOG
else
    if [ -z "$KERNEL" ]; then
        load_kernel_env || die "no --kernel and no cached kernel (run scripts/build-guest-kernel.sh)"
        KERNEL=$SHAREGPU_KERNEL_IMAGE
    fi
    [ -f "$KERNEL" ] || die "kernel $KERNEL not found"
    [ -n "$INITRD" ] && [ -f "$INITRD" ] || die "--initrd FILE required (scripts/build-guest-image.sh)"

    if [ -z "${QEMU:-}" ] && ! find_qemu; then
        QEMU=$(command -v qemu-system-x86_64 || true)
    fi
    [ -n "$QEMU" ] && [ -x "$QEMU" ] || die "no QEMU (set QEMU=/path/to/qemu-system-x86_64)"

    if [ -z "$LOG" ]; then
        mkdir -p "$CACHE/logs"
        LOG=$CACHE/logs/guest-$(date +%Y%m%d-%H%M%S)-$$.log
    fi
    mkdir -p "$(dirname "$LOG")"

    FW=()
    for d in /usr/share/qemu /usr/share/seabios; do [ -d "$d" ] && FW+=(-L "$d"); done
    # the runner's QMP monitor turns off -nographic's default mux monitor on the console
    SERIAL=(-serial mon:stdio)
    for a in ${EXTRA[@]+"${EXTRA[@]}"}; do
        case "$a" in -serial) SERIAL=() ;; esac
    done
    # --profile: the guest prints its modules' functions (the image's init), to name samples
    [ -z "$PROFILE" ] || APPEND="$APPEND sharegpu.kallsyms=1"
    CMD=("$QEMU" -M q35 -accel tcg -m "$MEM" -smp "$SMP" -nodefaults -nographic -no-reboot
         "${FW[@]}" -kernel "$KERNEL" -initrd "$INITRD"
         -append "console=ttyS0 panic=-1 loglevel=7 ${APPEND# }"
         -qmp "unix:$RUN/qmp.sock,server=on,wait=off" ${SERIAL[@]+"${SERIAL[@]}"}
         ${EXTRA[@]+"${EXTRA[@]}"})
    PROFILER_PID=""
    if [ -n "$PROFILE" ]; then
        # System.map beside the image's build tree (kernel.env), or given by SYSTEM_MAP
        SYSTEM_MAP=${SYSTEM_MAP:-$(dirname "$KERNEL")/linux/System.map}
        [ -f "$SYSTEM_MAP" ] || die "--profile: no System.map at $SYSTEM_MAP (set SYSTEM_MAP)"
        CMD+=(-qmp "unix:$RUN/profile.sock,server=on,wait=off")
    fi
    if [ "$INTERACTIVE" = 1 ]; then
        say "$QEMU (interactive) log: $LOG"
    else
        say "$QEMU (timeout ${TIMEOUT}s, silence ${SILENCE}s) log: $LOG"
    fi
    say "${CMD[*]}"

    START=$(date +%s.%N)
    if [ "$INTERACTIVE" = 1 ]; then
        set +e
        "${CMD[@]}" 2>&1 | tee "$LOG"
        rc=${PIPESTATUS[0]}
        set -e
    else
        # QEMU is a direct child (its pid for gdb); tee copies the console to the log and stdout.
        # QEMU's stderr has a file of its own: written into the console's stream, a warning
        # could land in the middle of a guest's result line and split it.
        mkfifo "$RUN/console"
        tee "$LOG" <"$RUN/console" &
        TEE_PID=$!
        "${CMD[@]}" </dev/null >"$RUN/console" 2>"$RUN/qemu.err" &
        QEMU_PID=$!
        if [ -n "$PROFILE" ]; then
            python3 "$ROOT/scripts/guest-profile.py" --qmp "$RUN/profile.sock" \
                --system-map "$SYSTEM_MAP" --kallsyms-log "$LOG" -o "$PROFILE" \
                ${GUEST_PROFILE_ARGS:-} &
            PROFILER_PID=$!
        fi
        last_size=-1 last_output=$SECONDS started=$SECONDS LONGEST_SILENCE=0
        while kill -0 "$QEMU_PID" 2>/dev/null; do
            size=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
            [ "$size" = "$last_size" ] || { last_size=$size; last_output=$SECONDS; }
            quiet=$((SECONDS - last_output))
            [ "$quiet" -le "$LONGEST_SILENCE" ] || LONGEST_SILENCE=$quiet
            if [ "$SILENCE" != 0 ] && [ "$quiet" -ge "$SILENCE" ]; then ENDED=frozen; break; fi
            if [ "$TIMEOUT" != 0 ] && [ $((SECONDS - started)) -ge "$TIMEOUT" ]; then
                ENDED=timeout; break
            fi
            sleep 1
        done
        case $ENDED in
            frozen) collect_diagnostics "FROZEN: no console output for ${SILENCE} s" ;;
            timeout) collect_diagnostics "TIMEOUT: guest still running after ${TIMEOUT} s" ;;
        esac
        [ "$ENDED" = exited ] || stop_qemu
        wait "$QEMU_PID" || rc=$?
        QEMU_PID=""
        wait "$TEE_PID" || true
        if [ -s "$RUN/qemu.err" ]; then  # whole lines after the console's
            { echo "[run-guest] QEMU's stderr:"; cat "$RUN/qemu.err"; } | tee -a "$LOG"
        fi
        if [ -n "$PROFILER_PID" ]; then
            wait "$PROFILER_PID" && say "guest profile: $PROFILE ($(head -n 1 "$PROFILE"))" ||
                say "guest profile: the profiler failed"
        fi
    fi
    ELAPSED=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
fi

# ---- verdict ----------------------------------------------------------------------------
CLEAN=$RUN/console.txt
tr -d '\r' <"$LOG" >"$CLEAN"
if [ -f "$RUN/diag" ]; then  # after the console, so it is not judged as guest output
    cat "$RUN/diag" >>"$LOG"
    print_diagnostics_excerpt
fi
status=0
# WARNs the caller expects (--allow-warn-in): their whole report leaves what is judged
if [ ${#ALLOW_WARN_IN[@]} -gt 0 ]; then
    printf '%s\n' "${ALLOW_WARN_IN[@]}" >"$RUN/allowed-warns"
    awk -v allowed="$RUN/allowed-warns" -v dropped="$RUN/dropped-warns" '
        BEGIN { while ((getline a < allowed) > 0) {
                    n++; sp = index(a, " ")
                    fn[n] = substr(a, 1, sp - 1) "+0x"; mod[n] = substr(a, sp + 1) } }
        function flush(keep, i) {
            if (keep) for (i = 1; i <= nb; i++) print buf[i]
            else print buf[2] >> dropped
            nb = 0; inblock = 0
        }
        /-+\[ cut here \]-+/ { if (inblock) flush(1); inblock = 1; hit = 0 }
        inblock {
            # a line not from the kernel (user space writing meanwhile) is always kept
            if ($0 !~ /^\[ *[0-9]+\.[0-9]+\]/) { print; next }
            buf[++nb] = $0
            for (i = 1; i <= n; i++)
                if (index($0, fn[i]) && index($0, mod[i])) hit = 1
            if ($0 ~ /---\[ end trace/) { flush(!hit); hit = 0 }
            next
        }
        { print }
        END { if (inblock) flush(1) }' "$CLEAN" >"$RUN/judged.txt"
    if [ -s "$RUN/dropped-warns" ]; then
        say "expected WARNs (--allow-warn-in), not reports: $(wc -l <"$RUN/dropped-warns")"
        sed 's/^/[run-guest]   /' "$RUN/dropped-warns" >&2
        ALLOWED_TAINT=$((ALLOWED_TAINT | (1 << 9)))  # W: only these warned (others fail)
    fi
    CLEAN=$RUN/judged.txt
fi
PATTERN='WARNING: possible|circular locking|possible recursive locking|BUG: KASAN|(^|[^A-Za-z_])WARNING:|-+\[ cut here \]-+|Oops|(^|[^A-Za-z_])BUG:|Kernel panic|INFO: task .* blocked|inconsistent lock state|UBSAN:|general protection fault'
# lockup detectors: soft/hard lockup, RCU stall, workqueue lockup (hung task: "INFO: task")
PATTERN+='|soft lockup|hard LOCKUP|self-detected stall|detected (expedited )?stalls on|workqueue lockup'
if grep -qE "$PATTERN" "$CLEAN"; then
    say "KERNEL REPORT in $LOG:"
    grep -nE "$PATTERN" "$CLEAN" | head -n 20 | sed 's/^/[run-guest]   /' >&2
    status=1
fi
# The kernel's own verdict at the end: tainted by anything but out-of-tree (O, bit 12) or
# unsigned (E, bit 13) modules, or lockdep turned off by an earlier problem (debug_locks 0).
STATE=$(grep -E '^SHAREGPU-KERNEL-STATE:' "$CLEAN" | tail -n 1 || true)
if [ -n "$STATE" ]; then
    tainted=$(sed -n 's/.*tainted=\([0-9]*\).*/\1/p' <<<"$STATE")
    debug_locks=$(sed -n 's/.*debug_locks=\([0-9a-z]*\).*/\1/p' <<<"$STATE")
    if [ -z "$tainted" ] || [ $((tainted & ~ALLOWED_TAINT)) != 0 ]; then
        say "KERNEL REPORT in $LOG: kernel tainted (${tainted:-?}; only O and E$([ $((ALLOWED_TAINT >> 18 & 1)) = 0 ] || echo ' and N') are allowed)"
        status=1
    fi
    if [ "$debug_locks" = 0 ]; then
        say "KERNEL REPORT in $LOG: lockdep turned itself off (debug_locks 0)"
        status=1
    fi
fi
SUMMARY=$(grep -E '^SHAREGPU-SUMMARY:' "$CLEAN" | tail -n 1 || true)
grep -E '^SHAREGPU-TEST: FAIL' "$CLEAN" | sed 's/^/[run-guest]   /' >&2 || true
silence_note=""
[ -z "$LONGEST_SILENCE" ] || silence_note=", longest console silence ${LONGEST_SILENCE}s"
case $ENDED in
    frozen) say "FAIL: FROZEN: no console output for ${SILENCE} s (${ELAPSED}s); see $LOG"
            exit 4 ;;
    timeout) say "FAIL: TIMEOUT after ${TIMEOUT}s${silence_note}; see $LOG"
             exit 3 ;;
esac
if [ "$rc" != 0 ]; then
    if [ "$rc" -gt 128 ]; then
        why="killed by signal $((rc - 128)) (SIG$(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
    else
        why="exit status $rc"
    fi
    say "FAIL: QEMU exited abnormally: $why after ${ELAPSED}s; its last messages:"
    grep -E 'qemu-system-[A-Za-z0-9_]+: ' "$CLEAN" | tail -n 5 | sed 's/^/[run-guest]   /' >&2 || true
    say "see $LOG"
    exit 5
fi
if [ -z "$SUMMARY" ]; then
    if grep -q '^SHAREGPU: interactive shell' "$CLEAN"; then
        say "no summary (shell mode), qemu exit $rc, ${ELAPSED}s"
        exit $status
    fi
    say "FAIL: no SHAREGPU-SUMMARY line (qemu exit $rc, ${ELAPSED}s${silence_note}); see $LOG"
    exit 3
fi
case "$SUMMARY" in
    "SHAREGPU-SUMMARY: PASS"*) ;;
    *) status=1 ;;
esac
if [ "$status" = 0 ]; then verdict=PASS
elif [ "${SUMMARY#SHAREGPU-SUMMARY: PASS}" != "$SUMMARY" ]; then verdict="FAIL (kernel report)"
else verdict=FAIL; fi
say "$verdict in ${ELAPSED}s${silence_note}: $SUMMARY"
echo "$SUMMARY"
exit $status
