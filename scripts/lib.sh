# What the scripts in scripts/ share. Sourced, never run, right after a script's `set` line:
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh" TAG
# TAG names the script in its messages ("[TAG] ...") and in its closing line ("TAG: N passed,
# M failed"). Works under `set -u` and `set -e`; defines nothing that runs at source time
# except the two variables:
#   ROOT    the checkout (the parent of scripts/)
#   CACHE   ${SHAREGPU_CACHE:-~/.cache/sharegpu}: heavy artefacts, logs, ccache
#
# Messages and arguments
#   say MSG...             "[TAG] MSG" on stderr; SAY_TIME=1 adds the time: "[TAG HH:MM:SS] MSG"
#   die MSG...             "[TAG] ERROR: MSG" on stderr, exit ${DIE_STATUS:-1}
#   usage                  prints the calling script's header comment (line 2 up to its `set`
#                          line), which is therefore its --help
#   usage_error MSG...     say MSG, exit 2
#   other_arg ARG          the argument parser's last case: -h/--help prints usage and exits
#                          0, anything else is usage_error "unknown argument ARG (see --help)"
# Verdict
#   verdict PASSED FAILED [SKIPPED]   prints the closing line "TAG: N passed, M failed[, S
#                          skipped]"; returns 0 only when FAILED is 0
#   give_up MSG...         say MSG, closing line "TAG: 0 passed, 1 failed", exit 1
# Process housekeeping
#   at_exit CMD            CMD (a shell string) runs on exit, the last registered first
#   make_run_dir NAME      RUN = a new /tmp/sgpu-NAME.XXXXXX, removed on exit
#   lock_or_wait FILE WHAT exclusive flock on FILE through fd 9, held until exit or `exec 9>&-`;
#                          returns 1 when it first had to wait for another holder (WHAT says
#                          which), so the caller re-checks what that holder may have made
# Builds
#   use_ccache             CCACHE_DIR (in CACHE unless set), CC and CXX through ccache
#   meson_configure DIR [ARGS...]   `meson setup DIR -Dwerror=true ARGS` unless DIR is set up
#                          (log DIR.setup.log, shown on failure)
# Packages
#   debian_suite_entry TYPES SUITES   a deb822 stanza for Debian's SUITES, copied from the first
#                          bookworm stanza of $DEBIAN_SOURCES (the machine's own
#                          debian.sources), so that no script names a registry host
# Guest
#   load_kernel_env        sources CACHE/kernel/current/kernel.env (SHAREGPU_KERNEL_IMAGE,
#                          _BUILD, _RELEASE, _HEADERS; scripts/build-guest-kernel.sh writes it);
#                          returns 1 when there is none
#   find_qemu              QEMU = $QEMU, else the cached CACHE/qemu/current/qemu-system-x86_64;
#                          exported; returns 1 when that is not an executable
#   guest_qemu_args VRAM [RUN]   QEMU_ARGS = the guest's devices, g0 (coherent, plus the
#                          properties in $G0_PROPS, e.g. ",broker=b0") and g1
#                          (coherent=off, plus the properties in $G1_PROPS, e.g.
#                          ",check-coherency=on"), VRAM each; with RUN also the host agent's
#                          QMP socket
#                          and reply serial port (the guest's ttyS1) in RUN
#   start_host_agent RUN LOG [ARGS...]   guest-tests/host-agent.py on the sockets in RUN,
#                          following the console log LOG (ARGS: more agent options, e.g.
#                          --mailbox DIR); stopped on exit
#   build_broker           builds the broker daemon (meson, ROOT/build); BROKER = its path
#   start_broker SOCK LOG [ARGS...]  starts $BROKER on SOCK (output in LOG; ARGS: its
#                          options), waits for its "ready on" line (60 s deadline);
#                          BROKER_PID; stopped on exit
#   gtest_counts LOG BINS  "PASSED FAILED SKIPPED" of the guest's GoogleTest cases in the
#                          console log LOG (SHAREGPU-GTEST lines; BINS: the binaries that
#                          must have run, space-separated); FAIL/SKIP lines on stderr. A
#                          case without a result, a binary that never ran, exited non-zero
#                          without a failed case or printed no summary is a failure

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEBIAN_SOURCES=${DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
CACHE=${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}
SG_TAG=${1:?"lib.sh: source it with the calling script's TAG"}
SG_AT_EXIT=()

say() {
    if [ "${SAY_TIME:-0}" = 1 ]; then
        printf '[%s %(%H:%M:%S)T] %s\n' "$SG_TAG" -1 "$*" >&2
    else
        printf '[%s] %s\n' "$SG_TAG" "$*" >&2
    fi
}
die() { say "ERROR: $*"; exit "${DIE_STATUS:-1}"; }
usage() { sed -n '2,/^set -/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
usage_error() { say "$*"; exit 2; }
other_arg() {
    case "$1" in
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown argument $1 (see --help)" ;;
    esac
}

verdict() {
    echo "$SG_TAG: $1 passed, $2 failed${3:+, $3 skipped}"
    [ "$2" = 0 ]
}
give_up() { say "$*"; verdict 0 1; exit 1; }

sg_run_at_exit() {
    local cmd
    for cmd in ${SG_AT_EXIT[@]+"${SG_AT_EXIT[@]}"}; do eval "$cmd" || true; done
}
at_exit() {
    SG_AT_EXIT=("$1" ${SG_AT_EXIT[@]+"${SG_AT_EXIT[@]}"})
    trap sg_run_at_exit EXIT
}
make_run_dir() {
    RUN=$(mktemp -d "/tmp/sgpu-$1.XXXXXX")
    at_exit "rm -rf $(printf %q "$RUN")"
}
lock_or_wait() {
    exec 9>"$1"
    flock -n 9 && return 0
    say "$2 is running; waiting for it"
    flock 9
    return 1
}

use_ccache() {
    export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
    export CC="ccache gcc" CXX="ccache g++"
    # CI clones to a new path each time: hash paths relative to the checkout and leave the
    # working directory out, or every clone misses (23% hits were measured before this)
    export CCACHE_BASEDIR=$ROOT CCACHE_NOHASHDIR=true
}
meson_configure() {
    local dir=$1; shift
    [ -f "$dir/build.ninja" ] && return 0
    meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 && return 0
    cat "$dir.setup.log"
    return 1
}

debian_suite_entry() {
    [ -f "$DEBIAN_SOURCES" ] || return 0
    awk -v types="$1" -v suites="$2" '
        BEGIN { RS=""; ORS="\n\n" }
        /Suites:[^\n]*bookworm([ \n]|$)/ && !done {
            n = split($0, lines, "\n"); out = ""
            for (i = 1; i <= n; i++) {
                if (lines[i] ~ /^#/) continue
                if (lines[i] ~ /^Types:/) lines[i] = "Types: " types
                if (lines[i] ~ /^Suites:/) lines[i] = "Suites: " suites
                out = out lines[i] "\n"
            }
            printf "%s\n", out; done = 1
        }' "$DEBIAN_SOURCES"
}

load_kernel_env() {
    [ -f "$CACHE/kernel/current/kernel.env" ] || return 1
    # shellcheck disable=SC1091
    . "$CACHE/kernel/current/kernel.env"
}
find_qemu() {
    QEMU=${QEMU:-$CACHE/qemu/current/qemu-system-x86_64}
    export QEMU
    [ -x "$QEMU" ]
}
build_broker() {
    BROKER=$ROOT/build/host-backend/broker/sharegpu-broker
    use_ccache
    meson_configure "$ROOT/build" >&2 &&
        nice ninja -C "$ROOT/build" host-backend/broker/sharegpu-broker >&2
}
start_broker() {  # SOCK LOG [BROKER ARGS...]
    local sock=$1 log=$2 deadline=$((SECONDS + 60))
    shift 2
    "$BROKER" --socket "$sock" "$@" >"$log" 2>&1 &
    BROKER_PID=$!
    at_exit "kill $BROKER_PID 2>/dev/null && wait $BROKER_PID 2>/dev/null"
    until grep -q 'ready on' "$log"; do  # its explicit message; the deadline detects a hang
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$log" >&2; say "the broker exited"; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { say "the broker did not say it is ready in 60 s"; return 1; }
        sleep 0.1
    done
}
guest_qemu_args() {
    # virtio-gpu: the peer of the standard-uAPI table (guest-tests/sgpu_uapi_test.cc); after
    # the sharegpu devices so that they stay the first PCI functions (00:01.0 and 00:02.0: the
    # runner boots with -nodefaults, so there is no VGA at 00:01.0)
    QEMU_ARGS=(-device "sharegpu,id=g0,vram-size=$1${G0_PROPS:-}"
               -device "sharegpu,id=g1,coherent=off,engine=virgl,vram-size=$1${G1_PROPS:-}"
               -device virtio-gpu-pci)
    [ -n "${2:-}" ] || return 0
    # the console is given explicitly, as -device isa-serial (index 1) is the reply channel
    QEMU_ARGS+=(-serial mon:stdio
                -qmp "unix:$2/qmp.sock,server=on,wait=off"
                -chardev "socket,id=sgpureply,path=$2/reply.sock,server=on,wait=off"
                -device isa-serial,chardev=sgpureply,index=1)
}
start_host_agent() {
    python3 "$ROOT/guest-tests/host-agent.py" --log "$2" --qmp "$1/qmp.sock" \
        --reply "$1/reply.sock" --connect-timeout 300 "${@:3}" &
    at_exit "kill $! 2>/dev/null && wait $! 2>/dev/null"
}
gtest_counts() {
    tr -d '\r' <"$1" | awk -v bins="$2" '
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
    }'
}
