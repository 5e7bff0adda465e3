#!/usr/bin/env bash
# Builds a busybox initramfs (newc cpio, gzip) for the sharegpu guest.
#
# usage: scripts/build-guest-image.sh --out FILE.cpio.gz [options]
#   --module X.ko        kernel module, insmod'ed at boot in the given order (repeatable)
#   --module-args "A=1"  insmod arguments for the preceding --module
#   --test BIN           test executable (static ELF or #!/bin/sh script), run in the
#                        given order (repeatable); stored as /tests/NN-<name>
#   --test-dir DIR       add every executable file in DIR (sorted) as tests
#   --file SRC:DEST      copy any extra file into the image at absolute path DEST
#   --fuzzer BIN         the ioctl fuzzer (guest-tests/sgpu_fuzz), run by the fuzz mode
#   --init-mode MODE     tests (default): load modules, run tests, print summary, power off
#                        shell: load modules, interactive shell on the console, power off on exit
#                        demo:  like tests, then an interactive shell instead of powering off
#                        silent: load modules, print one line, then nothing (self-test of
#                        the runner's silence watchdog, scripts/run-guest-selftest.sh)
#                        fuzz:  load modules, run the fuzzer, then the tests, print summary,
#                               power off
#   --test-timeout SECS  per-test timeout inside the guest (default 600)
#   --no-unload          do not rmmod the modules (reverse order) after the tests
# Env: GUEST_MODULES / GUEST_TESTS (space-separated paths) are added before the arguments.
# Boot-time overrides on the kernel command line: sharegpu.mode=tests|shell|demo|fuzz,
# sharegpu.timeout=SECS, sharegpu.unload=0|1; for the fuzz mode sharegpu.fuzz.seed=N,
# sharegpu.fuzz.duration=SECS (default 60) and sharegpu.fuzz.args=ARG,ARG,... (more
# sgpu_fuzz arguments, comma-separated). The fuzzer runs as a step named "fuzz"; /dev/dri
# nodes are made world-accessible first so it can fuzz as an unprivileged user (--uid N).
#
# Guest console protocol (parsed by scripts/run-guest.sh):
#   SHAREGPU-TEST: START|PASS|FAIL <name> ...     per test / module step
#   SHAREGPU-KERNEL-STATE: tainted=N debug_locks=N|none   (just before the summary)
#   SHAREGPU-SUMMARY: PASS|FAIL tests=N passed=N failed=N modules=N module_failures=N
# Output is deterministic (fixed mtimes/owners), no root needed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" guest-image

OUT="" MODE=tests TEST_TIMEOUT=600 UNLOAD=1 FUZZER=""
MODULES=() MODARGS=() TESTS=() FILES=()
for m in ${GUEST_MODULES:-}; do MODULES+=("$m"); MODARGS+=(""); done
for t in ${GUEST_TESTS:-}; do TESTS+=("$t"); done

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --module) MODULES+=("$2"); MODARGS+=(""); shift 2 ;;
        --module-args)
            [ ${#MODULES[@]} -gt 0 ] || die "--module-args before any --module"
            MODARGS[${#MODULES[@]}-1]=$2; shift 2 ;;
        --test) TESTS+=("$2"); shift 2 ;;
        --test-dir)
            [ -d "$2" ] || die "--test-dir $2: not a directory"
            while IFS= read -r f; do [ -x "$f" ] && TESTS+=("$f"); done < <(find "$2" -maxdepth 1 -type f | LC_ALL=C sort)
            shift 2 ;;
        --file) FILES+=("$2"); shift 2 ;;
        --fuzzer) FILES+=("$2:/usr/bin/sgpu_fuzz"); FUZZER=$2; shift 2 ;;
        --init-mode) MODE=$2; shift 2 ;;
        --test-timeout) TEST_TIMEOUT=$2; shift 2 ;;
        --no-unload) UNLOAD=0; shift ;;
        *) other_arg "$1" ;;
    esac
done
[ -n "$OUT" ] || die "--out FILE is required"
case "$MODE" in tests|shell|demo|silent|fuzz) ;;
    *) die "--init-mode must be tests, shell, demo, silent or fuzz" ;; esac
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package busybox-static)"
readelf -lW "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter' && die "$BUSYBOX is not static"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc/sharegpu,tests,lib/modules/sharegpu,root}
cp "$BUSYBOX" "$STAGE/bin/busybox"
for a in $("$BUSYBOX" --list-full); do
    [ "$a" = bin/busybox ] || [ -e "$STAGE/$a" ] || ln -s /bin/busybox "$STAGE/$a"
done

check_exec() { # static ELF or script
    [ -f "$1" ] || die "$1: no such file"
    if head -c4 "$1" | grep -q 'ELF'; then
        if readelf -lW "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; then
            die "$1 is dynamically linked; the image has no libc (build with -static)"
        fi
    fi
}

[ -z "$FUZZER" ] || check_exec "$FUZZER"
i=0
: >"$STAGE/etc/sharegpu/modules"
for m in ${MODULES[@]+"${MODULES[@]}"}; do
    [ -f "$m" ] || die "module $m: no such file"
    name=$(printf '%02d-%s' $((i + 1)) "$(basename "$m")")
    cp "$m" "$STAGE/lib/modules/sharegpu/$name"
    printf '%s %s\n' "$name" "${MODARGS[$i]}" >>"$STAGE/etc/sharegpu/modules"
    i=$((i + 1))
done
i=0
for t in ${TESTS[@]+"${TESTS[@]}"}; do
    check_exec "$t"
    i=$((i + 1))
    dst=$STAGE/tests/$(printf '%02d-%s' "$i" "$(basename "$t")")
    cp "$t" "$dst"; chmod 0755 "$dst"
done
for f in ${FILES[@]+"${FILES[@]}"}; do
    src=${f%%:*} dst=${f#*:}
    [ -e "$src" ] && [ "${dst#/}" != "$dst" ] || die "--file $f: want existing SRC and absolute DEST"
    mkdir -p "$STAGE$(dirname "$dst")"
    cp -a "$src" "$STAGE$dst"
done
echo "$MODE" >"$STAGE/etc/sharegpu/mode"
echo "$TEST_TIMEOUT" >"$STAGE/etc/sharegpu/timeout"
echo "$UNLOAD" >"$STAGE/etc/sharegpu/unload"

cat >"$STAGE/init" <<'INIT'
#!/bin/busybox sh
# sharegpu guest init (generated by scripts/build-guest-image.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug
exec </dev/console >/dev/console 2>&1

mode=$(cat /etc/sharegpu/mode) tmo=$(cat /etc/sharegpu/timeout) unload=$(cat /etc/sharegpu/unload)
fuzz_seed="" fuzz_duration=60 fuzz_args="" kallsyms=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        sharegpu.mode=*) mode=${arg#*=} ;;
        sharegpu.timeout=*) tmo=${arg#*=} ;;
        sharegpu.unload=*) unload=${arg#*=} ;;
        sharegpu.fuzz.seed=*) fuzz_seed=${arg#*=} ;;
        sharegpu.fuzz.duration=*) fuzz_duration=${arg#*=} ;;
        sharegpu.fuzz.args=*) fuzz_args=$(echo "${arg#*=}" | tr , ' ') ;;
        sharegpu.kallsyms=*) kallsyms=${arg#*=} ;;
    esac
done
off() { sync; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; sleep 60; }
lockdep=off; [ -e /proc/lockdep ] && lockdep=on
echo "SHAREGPU: init mode=$mode kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) lockdep=$lockdep uptime=$(cut -d' ' -f1 /proc/uptime)s"

nmod=0 modfail=0 loaded=""
while read -r ko args; do
    [ -n "$ko" ] || continue
    nmod=$((nmod + 1))
    before=$(cut -d' ' -f1 /proc/modules)
    if insmod "/lib/modules/sharegpu/$ko" $args; then
        echo "SHAREGPU-TEST: PASS insmod:$ko"
        for m in $(cut -d' ' -f1 /proc/modules); do
            echo "$before" | grep -qx "$m" || loaded="$m $loaded"
        done
    else
        echo "SHAREGPU-TEST: FAIL insmod:$ko (exit $?)"
        modfail=$((modfail + 1))
    fi
done </etc/sharegpu/modules
# scripts/run-guest.sh --profile: the loaded modules' functions, so that their samples are named
if [ "$kallsyms" = 1 ]; then
    echo "SHAREGPU-KALLSYMS-BEGIN"
    grep -E '^[0-9a-f]+ [tT] [^ ]+[[:space:]]+\[' /proc/kallsyms
    echo "SHAREGPU-KALLSYMS-END"
fi

shell() { echo "SHAREGPU: interactive shell; exit it to power off"; setsid cttyhack sh -l; }

if [ "$mode" = shell ]; then shell; off; fi
if [ "$mode" = silent ]; then
    dmesg -n 1; echo "SHAREGPU: silent mode: no more console output"
    while :; do sleep 3600; done
fi

total=0 passed=0 failed=0 failures=""
run_step() { # NAME TIMEOUT COMMAND [ARGS...]
    name=$1 step_tmo=$2; shift 2
    total=$((total + 1))
    echo "SHAREGPU-TEST: START $name"
    start=$(cut -d' ' -f1 /proc/uptime)
    (cd /tmp && SHAREGPU_TEST_NAME=$name exec timeout -s KILL "$step_tmo" "$@")
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    dur=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1)); echo "SHAREGPU-TEST: PASS $name (${dur}s)"
    else
        why="exit $rc"; [ $rc -eq 137 ] && why="exit 137: killed, timeout ${step_tmo}s?"
        failed=$((failed + 1)); failures="$failures $name"
        echo "SHAREGPU-TEST: FAIL $name ($why, ${dur}s)"
    fi
}

if [ "$mode" = fuzz ]; then
    chmod 0666 /dev/dri/* 2>/dev/null
    seed_arg=""; [ -n "$fuzz_seed" ] && seed_arg="--seed $fuzz_seed"
    # the fuzzer's own watchdog gives up 120 s (its --grace) after the duration
    run_step fuzz $((fuzz_duration + 300)) /usr/bin/sgpu_fuzz $seed_arg \
        --duration "$fuzz_duration" $fuzz_args
fi
for t in /tests/*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_step "${t##*/}" "$tmo" "$t"
done

if [ "$unload" = 1 ]; then
    for mod in $loaded; do
        if rmmod "$mod"; then echo "SHAREGPU-TEST: PASS rmmod:$mod"
        else echo "SHAREGPU-TEST: FAIL rmmod:$mod"; modfail=$((modfail + 1)); fi
    done
fi

result=PASS
[ $failed -eq 0 ] && [ $modfail -eq 0 ] || result=FAIL
[ -n "$failures" ] && echo "SHAREGPU: failed tests:$failures"
# the runner fails on any taint but out-of-tree/unsigned modules, and on lockdep switched off
dl=none
[ -r /proc/lockdep_stats ] && dl=$(sed -n 's/^ *debug_locks: *//p' /proc/lockdep_stats)
echo "SHAREGPU-KERNEL-STATE: tainted=$(cat /proc/sys/kernel/tainted) debug_locks=${dl:-none}"
echo "SHAREGPU-SUMMARY: $result tests=$total passed=$passed failed=$failed modules=$nmod module_failures=$modfail uptime=$(cut -d' ' -f1 /proc/uptime)s"
[ "$mode" = demo ] && shell
off
INIT
chmod 0755 "$STAGE/init"

mkdir -p "$(dirname "$OUT")"
python3 - "$STAGE" "$OUT.tmp" <<'PY'
import gzip, os, stat, sys
root, out = sys.argv[1], sys.argv[2]
ino = [721]
def entry(f, name, mode, data=b"", rdev=(0, 0), nlink=1):
    ino[0] += 1
    hdr = "070701" + "".join("%08X" % v for v in (
        ino[0], mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0))
    f.write(hdr.encode() + name.encode() + b"\0")
    f.write(b"\0" * ((4 - (110 + len(name) + 1) % 4) % 4))
    f.write(data)
    f.write(b"\0" * ((4 - len(data) % 4) % 4))
with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entry(f, rel, stat.S_IFDIR | 0o755, nlink=2)
        for n in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(dirpath, d))):
            p = os.path.join(dirpath, n)
            name = os.path.normpath(os.path.join(rel, n))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                entry(f, name, stat.S_IFLNK | 0o777, os.readlink(p).encode())
            else:
                perm = 0o755 if st.st_mode & 0o111 else 0o644
                entry(f, name, stat.S_IFREG | perm, open(p, "rb").read())
    for name, maj, mnr in (("dev/console", 5, 1), ("dev/null", 1, 3), ("dev/ttyS0", 4, 64)):
        entry(f, name, stat.S_IFCHR | 0o600, rdev=(maj, mnr))
    entry(f, "TRAILER!!!", 0, nlink=1)
PY
mv "$OUT.tmp" "$OUT"
say "$OUT: $(stat -c %s "$OUT") bytes, mode=$MODE, ${#MODULES[@]} module(s), ${#TESTS[@]} test(s)"
