#!/usr/bin/env bash
# Builds the IGT tests that scripts/guest-igt.sh runs in the guest, from IGT (igt-gpu-tools 2.0:
# Debian trixie's source package intel-gpu-tools), with the shared libraries they need.
#
# usage: scripts/build-igt.sh [--source TARBALL] [-j N] [--force]
#   --source TARBALL  build this igt-gpu-tools source tarball instead of the Debian source
#                     package (also SHAREGPU_IGT_SOURCE=TARBALL); its top directory is the tree
#   -j N              parallel jobs (default 2; ninja runs under `nice -n 10`)
#   --force           rebuild even if the output for the current hash exists
#
# The source: `apt-get source --download-only intel-gpu-tools/trixie` once into
# ${SHAREGPU_CACHE:-~/.cache/sharegpu}/igt-src/dl (scripts/setup-host.sh adds the trixie deb-src
# entry, derived from the machine's own debian.sources), unpacked with dpkg-source (Debian's
# patches applied). When the package registry does not serve it and no --source is given, the
# script says so and exits 3 (guest-igt.sh then reports the IGT tests skipped, with that reason).
#
# Only the tests of TESTS below are built (ninja targets; libigt and its static helpers come
# with them), with ccache, against the host's libraries: meson disables docs, man pages, test
# plans, the runner, overlay, chamelium, valgrind, libunwind, the Xe tests and libdrm's vendor
# libraries.
#
# Output, cached under a key that hashes the source's identity (the Debian version, or the
# tarball's sha256), this script's text, the meson options, the test list and gcc's version:
#   ${SHAREGPU_CACHE:-~/.cache/sharegpu}/igt/<hash>/bin/<test>     stripped test binaries
#   .../igt/<hash>/lib/                 every shared library they load (libigt.so and the
#                                       host's: ldd), the dynamic loader ld-linux-x86-64.so.2
#   .../igt/<hash>/build-info.txt       source, options, build time;  build.log
#   .../igt/current -> <hash>
# A complete entry (stamp file "complete") makes the script exit at once. One IGT build runs
# at a time (flock on igt/build.lock); a second waits, then re-checks. stdout carries only
# the output directory; progress goes to stderr. A cold build takes ~25 s on 2 idle cores (~3
# minutes while a kernel build shares them).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" build-igt
SAY_TIME=1

SUITE=${SHAREGPU_IGT_SUITE:-trixie}
SOURCE=${SHAREGPU_IGT_SOURCE:-}
JOBS=2
FORCE=0
TESTS=(core_auth core_getclient core_getstats core_getversion core_setmaster dumb_buffer
       syncobj_basic syncobj_wait syncobj_timeline syncobj_eventfd sw_sync dmabuf)
MESON_OPTS=(--buildtype=release -Db_ndebug=false -Dtests=enabled -Drunner=disabled
            -Doverlay=disabled -Dchamelium=disabled -Dvalgrind=disabled -Dman=disabled
            -Dtestplan=disabled -Dsphinx=disabled -Ddocs=disabled -Dxe_driver=disabled
            -Dxe_eudebug=disabled -Dvmtb=disabled -Dlibunwind=disabled -Doping=disabled
            -Dlibdrm_drivers=)

while [ $# -gt 0 ]; do
    case "$1" in
        --source) SOURCE=$2; shift 2 ;;
        -j) JOBS=$2; shift 2 ;;
        -j*) JOBS=${1#-j}; shift ;;
        --force) FORCE=1; shift ;;
        *) other_arg "$1" ;;
    esac
done
START=$SECONDS

# ---- 1. the source ----------------------------------------------------------------------
DL=$CACHE/igt-src/dl
if [ -n "$SOURCE" ]; then
    [ -f "$SOURCE" ] || die "--source $SOURCE: no such file (an igt-gpu-tools source tarball)"
    SOURCE=$(realpath "$SOURCE")
    ident="tarball $(sha256sum <"$SOURCE" | cut -d' ' -f1)"
else
    mkdir -p "$DL"
    dsc=$(ls "$DL"/intel-gpu-tools_*.dsc 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$dsc" ]; then
        say "downloading the IGT source package (intel-gpu-tools/$SUITE)"
        get() { (cd "$DL" && apt-get source --download-only "intel-gpu-tools/$SUITE") >"$DL/apt-get-source.log" 2>&1; }
        if ! get; then
            say "apt-get source failed; trying apt-get update first"
            apt-get update -q >/dev/null 2>&1 || true
            if ! get; then
                # apt leaves the files it did get: the next try must not take them for a package
                rm -f "$DL"/intel-gpu-tools_*
                sed 's/^/    /' "$DL/apt-get-source.log" | grep -E 'E:|Err' >&2 || true
                say "the package registry does not serve intel-gpu-tools/$SUITE (see above; is the" \
                    "$SUITE deb-src entry there? scripts/setup-host.sh adds it); no --source given"
                exit 3
            fi
        fi
        dsc=$(ls "$DL"/intel-gpu-tools_*.dsc | sort -V | tail -n 1)
    fi
    ident="debian intel-gpu-tools $(sed -n 's/^Version: //p' "$dsc" | head -n 1)"
fi

# ---- 2. the key ---------------------------------------------------------------------------
KEY=$(
    {
        echo "$ident"
        echo "tests ${TESTS[*]}"
        echo "meson ${MESON_OPTS[*]}"
        gcc --version | head -n 1
        cat "${BASH_SOURCE[0]}"
    } | sha256sum | cut -c1-16
)
IROOT=$CACHE/igt
OUT=$IROOT/$KEY
use_cached() {
    [ "$FORCE" = 0 ] && [ -f "$OUT/complete" ] || return 0
    ln -sfn "$KEY" "$IROOT/current"
    say "cached: $OUT ($((SECONDS - START))s)"
    echo "$OUT"
    exit 0
}
use_cached
mkdir -p "$IROOT"
lock_or_wait "$IROOT/build.lock" "another IGT build" || use_cached

# ---- 3. unpack, configure, build -------------------------------------------------------------
WORK=$OUT.tmp
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK"
at_exit "rm -rf $(printf %q "$WORK")"
say "unpacking $ident"
if [ -n "$SOURCE" ]; then
    mkdir -p "$WORK/src"
    tar -xf "$SOURCE" -C "$WORK/src" --strip-components=1
else
    dpkg-source --no-check -x "$dsc" "$WORK/src" >"$WORK/dpkg-source.log" 2>&1 ||
        { tail -n 20 "$WORK/dpkg-source.log" >&2; die "dpkg-source -x $dsc failed"; }
fi
use_ccache
export CCACHE_BASEDIR=$WORK CCACHE_NOHASHDIR=1
say "configuring (meson ${MESON_OPTS[*]})"
(cd "$WORK/src" && nice -n 10 meson setup "$WORK/build" "${MESON_OPTS[@]}") >"$WORK/setup.log" 2>&1 ||
    { tail -n 40 "$WORK/setup.log" >&2; die "meson setup failed (log $WORK/setup.log)"; }
targets=()
for t in "${TESTS[@]}"; do targets+=("tests/$t"); done
say "building ${#TESTS[@]} tests (-j$JOBS, nice 10, ccache)"
if ! nice -n 10 ninja -C "$WORK/build" -j "$JOBS" "${targets[@]}" >"$WORK/build.log" 2>&1; then
    grep -E 'error|FAILED' "$WORK/build.log" | head -n 40 >&2
    die "ninja failed (log $WORK/build.log)"
fi

# ---- 4. publish: tests, their libraries, the loader ---------------------------------------
mkdir -p "$WORK/out/bin" "$WORK/out/lib"
for t in "${TESTS[@]}"; do
    strip --strip-unneeded -o "$WORK/out/bin/$t" "$WORK/build/tests/$t"
done
# every library a test loads, resolved as on this host (libigt.so from the build dir)
for t in "${TESTS[@]}"; do
    LD_LIBRARY_PATH=$WORK/build/lib ldd "$WORK/build/tests/$t" |
        awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
    # not linked but dlopen'ed: glibc's pthread_exit/pthread_cancel unwinder (a failed
    # igt_assert in a test's thread ends the thread with pthread_exit)
    gcc -print-file-name=libgcc_s.so.1
done | sort -u | while read -r so; do
    if [ "$(basename "$so")" = "ld-linux-x86-64.so.2" ]; then
        cp -L "$so" "$WORK/out/lib/ld-linux-x86-64.so.2"
    else
        strip --strip-unneeded -o "$WORK/out/lib/$(basename "$so")" "$(readlink -f "$so")"
    fi
done
[ -f "$WORK/out/lib/ld-linux-x86-64.so.2" ] || die "no dynamic loader among the tests' libraries"
for so in libigt.so.0 libgcc_s.so.1; do
    [ -f "$WORK/out/lib/$so" ] || die "$so missing among the tests' libraries"
done
cp "$WORK/build.log" "$WORK/out/build.log"
{
    echo "source $ident"
    echo "tests ${TESTS[*]}"
    echo "meson ${MESON_OPTS[*]}"
    gcc --version | head -n 1
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - START))s"
} >"$WORK/out/build-info.txt"
touch "$WORK/out/complete"
mv "$WORK/out" "$OUT"
ln -sfn "$KEY" "$IROOT/current"
# keep the newest 3 outputs and what current points at
ls -1t "$IROOT" | grep -E '^[0-9a-f]{16}$' | tail -n +4 | while read -r d; do
    [ "$d" = "$KEY" ] || rm -rf "${IROOT:?}/$d"
done
say "done in $((SECONDS - START))s: $OUT ($(du -sh "$OUT/lib" | cut -f1) of libraries)"
echo "$OUT"
