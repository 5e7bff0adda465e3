#!/usr/bin/env bash
# Provides the IGT tests that scripts/guest-igt.sh runs in the guest, with the shared libraries
# they need: built from IGT's source (Debian trixie's source package intel-gpu-tools 2.0, or a
# tarball), or, where the package registry serves no IGT source, Debian's own prebuilt
# igt-gpu-tools-tests package.
#
# usage: scripts/build-igt.sh [--source TARBALL] [--prebuilt] [-j N] [--force]
#   --source TARBALL  build this igt-gpu-tools source tarball instead of the Debian source
#                     package (also SHAREGPU_IGT_SOURCE=TARBALL); its top directory is the tree
#   --prebuilt        skip the source package: take Debian's igt-gpu-tools-tests binaries
#   -j N              parallel jobs (default 2; ninja runs under `nice -n 10`)
#   --force           rebuild even if the output for the current hash exists
#
# 1. The source: `apt-get source --download-only intel-gpu-tools/trixie` once into
#    ${SHAREGPU_CACHE:-~/.cache/sharegpu}/igt-src/dl (scripts/setup-host.sh adds the trixie
#    deb-src entry, derived from the machine's own debian.sources), unpacked with dpkg-source
#    (Debian's patches applied). Only the tests of TESTS below are built (ninja targets; libigt
#    and its static helpers come with them), with ccache, against the host's libraries: meson
#    disables docs, man pages, test plans, the runner, overlay, chamelium, valgrind, libunwind,
#    the Xe tests and libdrm's vendor libraries.
# 2. Prebuilt, when the registry serves the source's .dsc but not its files (measured here:
#    every suite answers 404 for intel-gpu-tools' tarballs): Debian ships IGT's tests only from
#    unstable on (igt-gpu-tools-tests; bookworm's and trixie's intel-gpu-tools carry no test
#    binaries). A private apt configuration under igt-src/apt-$PREBUILT_SUITE (its sources entry
#    derived from debian.sources like setup-host.sh's; the host's apt state is not touched)
#    downloads that package and the library packages it depends on, unpacks them, and keeps
#    exactly the shared objects the tests' DT_NEEDED closure names, with that suite's glibc and
#    its loader (the guest image has no libc of its own: IGT's loader and libraries are the only
#    dynamic ones in it). Nothing is compiled; an unresolved library fails the script.
#    If neither works the script says so and exits 3 (guest-igt.sh then reports the IGT tests
#    skipped, with that reason).
#
# Output, cached under a key that hashes the source's identity (the Debian version, or the
# tarball's sha256), this script's text, the meson options, the test list and gcc's version:
#   ${SHAREGPU_CACHE:-~/.cache/sharegpu}/igt/<hash>/bin/<test>     stripped test binaries
#   .../igt/<hash>/lib/                 every shared library they load (libigt.so and the
#                                       others), the dynamic loader ld-linux-x86-64.so.2
#   .../igt/<hash>/build-info.txt       source, options, build time;  build.log
#   .../igt/current -> <hash>
# A complete entry (stamp file "complete") makes the script exit at once. One IGT build runs
# at a time (flock on igt/build.lock); a second waits, then re-checks. stdout carries only
# the output directory; progress goes to stderr. A cold build takes ~25 s on 2 idle cores (~3
# minutes while a kernel build shares them); the prebuilt path downloads ~20 MB once.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" build-igt
SAY_TIME=1

SUITE=${SHAREGPU_IGT_SUITE:-trixie}
PREBUILT_SUITE=${SHAREGPU_IGT_PREBUILT_SUITE:-sid}
SOURCE=${SHAREGPU_IGT_SOURCE:-}
PREBUILT=0
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
        --prebuilt) PREBUILT=1; shift ;;
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
elif [ "$PREBUILT" = 0 ]; then
    mkdir -p "$DL"
    dsc=$(ls "$DL"/intel-gpu-tools_*.dsc 2>/dev/null | sort -V | tail -n 1 || true)
    # asked less than a day ago and refused: do not ask again (warm runs stay offline)
    if [ -z "$dsc" ] && [ -n "$(find "$DL/not-served" -mmin -1440 2>/dev/null)" ]; then
        say "intel-gpu-tools/$SUITE's source was not served today ($DL/not-served):" \
            "taking Debian's prebuilt igt-gpu-tools-tests ($PREBUILT_SUITE)"
        PREBUILT=1
    elif [ -z "$dsc" ]; then
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
                    "$SUITE deb-src entry there? scripts/setup-host.sh adds it); no --source given:" \
                    "taking Debian's prebuilt igt-gpu-tools-tests ($PREBUILT_SUITE)"
                touch "$DL/not-served"
                PREBUILT=1
            fi
        fi
        [ "$PREBUILT" = 1 ] || dsc=$(ls "$DL"/intel-gpu-tools_*.dsc | sort -V | tail -n 1)
    fi
    [ "$PREBUILT" = 1 ] || ident="debian intel-gpu-tools $(sed -n 's/^Version: //p' "$dsc" | head -n 1)"
fi
if [ "$PREBUILT" = 1 ]; then
    # a private apt: its own sources entry, lists, cache and an empty dpkg status
    APTD=$CACHE/igt-src/apt-$PREBUILT_SUITE
    mkdir -p "$APTD/sources.list.d" "$APTD/lists/partial" "$APTD/archives/partial" "$APTD/cache"
    debian_suite_entry deb "$PREBUILT_SUITE" >"$APTD/sources.list.d/igt.sources"
    [ -s "$APTD/sources.list.d/igt.sources" ] ||
        { say "no Debian entry in $DEBIAN_SOURCES to derive $PREBUILT_SUITE from"; exit 3; }
    PAPT=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$APTD/sources.list.d"
          -o "Dir::State::Lists=$APTD/lists" -o Dir::State::status=/dev/null
          -o "Dir::Cache=$APTD/cache" -o "Dir::Cache::archives=$APTD/archives"
          -o APT::Sandbox::User=root)
    # the index once a day; an offline machine goes on with the lists it has
    if [ -z "$(ls "$APTD/lists" | grep -v -e partial -e lock)" ] ||
       [ -n "$(find "$APTD/lists" -maxdepth 1 -name '*Packages*' -mmin +1440 | head -n 1)" ]; then
        say "reading the $PREBUILT_SUITE package index (private apt in $APTD)"
        apt-get "${PAPT[@]}" -q update >"$APTD/update.log" 2>&1 ||
            say "apt-get update for $PREBUILT_SUITE failed (log $APTD/update.log)"
    fi
    version=$(apt-cache "${PAPT[@]}" show igt-gpu-tools-tests 2>/dev/null |
              sed -n 's/^Version: //p' | sort -V | tail -n 1)
    if [ -z "$version" ]; then
        say "the package registry serves neither intel-gpu-tools/$SUITE's source nor" \
            "igt-gpu-tools-tests/$PREBUILT_SUITE (log $APTD/update.log); no --source given"
        exit 3
    fi
    ident="debian igt-gpu-tools-tests $version ($PREBUILT_SUITE, prebuilt)"
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
if [ "$PREBUILT" = 1 ]; then
    # ---- 3'. Debian's binaries: the tests, the DT_NEEDED closure of their libraries ----------
    mkdir -p "$WORK/deb" "$WORK/root" "$WORK/out/bin" "$WORK/out/lib"
    # the library packages the tests' package depends on, transitively (not the tools, fonts
    # or python: nothing the tests load)
    mapfile -t debs < <(apt-cache "${PAPT[@]}" depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances igt-gpu-tools-tests 2>/dev/null |
        grep -v '^[ <]' | sort -u | grep -E '^(lib|zlib1g$|igt-gpu-tools)' | grep -v '^libpython')
    say "downloading igt-gpu-tools-tests $version and ${#debs[@]} packages it depends on"
    (cd "$WORK/deb" && apt-get "${PAPT[@]}" -q download "${debs[@]}") >"$WORK/build.log" 2>&1 ||
        { tail -n 20 "$WORK/build.log" >&2; die "apt-get download failed (log above)"; }
    for d in "$WORK"/deb/*.deb; do dpkg-deb -x "$d" "$WORK/root"; done
    LIBDIRS=("$WORK/root/usr/lib/x86_64-linux-gnu" "$WORK/root/lib/x86_64-linux-gnu")
    declare -A NEEDED_SEEN=()
    queue=()
    for t in "${TESTS[@]}"; do
        bin=$WORK/root/usr/libexec/igt-gpu-tools/$t
        [ -f "$bin" ] || die "igt-gpu-tools-tests $version has no $t"
        cp "$bin" "$WORK/out/bin/$t"
        queue+=("$bin")
    done
    # libgcc_s is dlopen'ed, not linked: glibc's pthread_exit unwinder (a failed igt_assert in
    # a test's thread ends the thread with pthread_exit)
    queue+=("@libgcc_s.so.1")
    while [ ${#queue[@]} -gt 0 ]; do
        f=${queue[0]}
        queue=("${queue[@]:1}")
        if [ "${f:0:1}" = @ ]; then
            needed=("${f:1}")
        else
            mapfile -t needed < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
        fi
        for so in "${needed[@]}"; do
            [ -n "${NEEDED_SEEN[$so]:-}" ] && continue
            NEEDED_SEEN[$so]=1
            path=""
            for d in "${LIBDIRS[@]}"; do
                [ -e "$d/$so" ] && { path=$(readlink -f "$d/$so"); break; }
            done
            [ -n "$path" ] || die "$so (needed by ${f##*/}) is in none of the downloaded packages"
            cp "$path" "$WORK/out/lib/$so"
            queue+=("$path")
        done
    done
    ldso=$WORK/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    [ -f "$ldso" ] || ldso=$WORK/root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    [ -f "$ldso" ] || die "no dynamic loader in the downloaded libc6"
    cp -L "$ldso" "$WORK/out/lib/ld-linux-x86-64.so.2"
    # proof that the closure is complete: the loader resolves every test on this host too
    for t in "${TESTS[@]}"; do
        "$WORK/out/lib/ld-linux-x86-64.so.2" --list --library-path "$WORK/out/lib" \
            "$WORK/out/bin/$t" >"$WORK/ldd.txt" 2>&1 && ! grep -q "not found" "$WORK/ldd.txt" ||
            { cat "$WORK/ldd.txt" >&2; die "$t does not resolve against the published libraries"; }
    done
else
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
fi
cp "$WORK/build.log" "$WORK/out/build.log"
{
    echo "source $ident"
    echo "tests ${TESTS[*]}"
    [ "$PREBUILT" = 1 ] || echo "meson ${MESON_OPTS[*]}"
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
