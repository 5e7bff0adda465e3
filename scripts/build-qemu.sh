#!/usr/bin/env bash
# Builds qemu-system-x86_64 (QEMU 10.0, Debian trixie source package) with the sharegpu device.
#
#   scripts/build-qemu.sh [--asan] [--plain] [--qtests] [--force] [-j N]
#
#   --asan     ASan+UBSan variant (backend -Db_sanitize=address,undefined, QEMU --enable-asan
#              --enable-ubsan); separate work tree, separate output hash.
#   --plain    QEMU without the sharegpu patches/device (pipeline timing / bisecting).
#   --qtests   also build the qtest binaries (tests/qtest/*-test) of the same tree.
#   --force    rebuild even if the output for the current hash exists.
#   --run-qtests  implies --qtests; runs them (TAP) against the built binary afterwards.
#
# Layout under ${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}:
#   qemu-src/dl/                    apt-get source --download-only (once)
#   qemu-src/qemu-<debver>/         pristine unpacked Debian tree (never modified)
#   work/{default,asan}/src         patched tree (kept: only changed files are rewritten, so
#   work/{default,asan}/build       ninja stays incremental); QEMU build dir. --plain uses
#                                   the same tree (overlay reverted to pristine)
#   backend/{default,asan}/         meson build dir of the project's host backend
#   qemu/<hash>/qemu-system-x86_64  result (+ qtest binaries and the sharegpu-broker daemon
#                                   they start, build-info.txt)
#   qemu/current -> <hash>          (qemu/current-asan, qemu/current-plain for the variants)
#
# <hash> covers what determines the binaries: QEMU source version, patches/qemu/*, device/**,
# include/sharegpu_hw.h, host-backend/** sources, the top-level meson.build, the variant, the
# configure flags, the compiler's version and RECIPE below. Not this file's text: bump RECIPE
# with any other change to how QEMU is built (the overlay, the backend build, the publish
# step); messages, options and scripts/lib.sh then cost no rebuild (a cold one on 2 idle
# cores: 4.7 to 6.5 minutes, the machine decides; ASan 8.2 to 11.5 at -O2, 7.5 at -O1). An
# unchanged rebuild only hashes and exits. One QEMU build runs at a time on the machine (any
# variant, any checkout; flock on qemu-build.lock in the cache); a second waits for it, then
# re-checks whether it made what the second wants.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" build-qemu
SAY_TIME=1

RECIPE=3  # the version of the build recipe (see above)
suite=${SHAREGPU_QEMU_SUITE:-trixie}
variant=default
plain=0
qtests=0
force=0
run_qtests=0
jobs=${SHAREGPU_JOBS:-$(nproc)}

while [ $# -gt 0 ]; do
    case "$1" in
        --asan) variant=asan ;;
        --plain) plain=1 ;;
        --qtests) qtests=1 ;;
        --run-qtests) qtests=1; run_qtests=1 ;;
        --force) force=1 ;;
        -j) jobs=$2; shift ;;
        -j*) jobs=${1#-j} ;;
        *) other_arg "$1" ;;
    esac
    shift
done
if [ "$plain" = 1 ]; then
    if [ "$variant" = asan ]; then variant=plain-asan; else variant=plain; fi
fi

t_start=$SECONDS
run_qtests_now() { # uses $out (set below)
    local t rc=0
    for t in "$out"/qtest/*-test; do
        say "running $(basename "$t")"
        QTEST_QEMU_BINARY="$out/qtest/bin/qemu-system-x86_64" timeout 300 "$t" --tap -k || rc=1
    done
    return $rc
}


# ---------------------------------------------------------------- 1. QEMU source (once)
dl=$CACHE/qemu-src/dl
mkdir -p "$dl"
dsc=$(ls "$dl"/qemu_*.dsc 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$dsc" ]; then
    say "downloading QEMU source package (qemu/$suite)"
    if ! (cd "$dl" && apt-get source --download-only "qemu/$suite" >"$dl/apt-get-source.log" 2>&1); then
        say "apt-get source failed; trying apt-get update first"
        apt-get update -q >/dev/null || true
        (cd "$dl" && apt-get source --download-only "qemu/$suite" >"$dl/apt-get-source.log" 2>&1) || {
            cat "$dl/apt-get-source.log" >&2
            die "cannot fetch QEMU source (is deb-src $suite configured? run scripts/setup-host.sh)"
        }
    fi
    dsc=$(ls "$dl"/qemu_*.dsc | sort -V | tail -1)
fi
debver=$(sed -n 's/^Version: //p' "$dsc" | head -1)
debver_dir=${debver#*:}
pristine=$CACHE/qemu-src/qemu-$debver_dir
if [ ! -f "$pristine/.sharegpu-unpacked" ]; then
    say "unpacking $(basename "$dsc") -> $pristine"
    rm -rf "$pristine" "$pristine.tmp"
    dpkg-source --no-check -x "$dsc" "$pristine.tmp" >"$CACHE/qemu-src/dpkg-source.log" 2>&1 || {
        tail -20 "$CACHE/qemu-src/dpkg-source.log" >&2; exit 1; }
    mv "$pristine.tmp" "$pristine"
    touch "$pristine/.sharegpu-unpacked"
fi

# ---------------------------------------------------------------- 2. inputs + hash
shopt -s nullglob
patches=()
if [ "$plain" = 0 ]; then
    patches=("$ROOT"/patches/qemu/*.patch)
fi
conf=(--target-list=x86_64-softmmu --without-default-features --enable-tcg --enable-kvm
      --disable-docs --disable-download --disable-install-blobs --disable-werror
      --enable-trace-backends=log)
# ASan+UBSan at -O1, as ASan's documentation suggests: -O2 compiled half as fast (a cold ASan
# build took 11.5 minutes on 2 cores) and finds nothing more
[ "${variant%asan}" != "$variant" ] && conf+=(--enable-asan --enable-ubsan -Doptimization=1)
# paths in the key are relative: it must not depend on the checkout's path
hash_inputs() {
    echo "qemu $debver variant $variant qtests $qtests recipe $RECIPE"
    echo "configure ${conf[*]}"
    cc --version | head -n 1
    if [ "$plain" = 0 ]; then
        (cd "$ROOT" && find patches/qemu device include/sharegpu_hw.h host-backend meson.build \
            -type f \( -name '*.patch' -o -name '*.c' -o -name '*.h' -o -name '*.cc' \
            -o -name '*.hh' -o -name '*.hpp' -o -name '*.cpp' -o -name 'meson.build' \
            -o -name 'meson_options.txt' -o -name 'meson.options' -o -name 'trace-events' \
            -o -name '*.json' -o -name '*.hx' \) \
            -not -path '*/tests/*' -not -path '*/bench/*' -print0 2>/dev/null \
            | sort -z | xargs -0 sha256sum)
        # the qtest sources do matter when qtests are built
        if [ "$qtests" = 1 ] && [ -d "$ROOT/device/tests" ]; then
            (cd "$ROOT" && find device/tests -type f -print0 | sort -z | xargs -0 -r sha256sum)
        fi
    fi
}
hash=$(hash_inputs | sha256sum | cut -c1-16)
out=$CACHE/qemu/$hash
link=current
[ "$variant" != default ] && link=current-$variant

use_cached() { # a complete output for $hash: make it current, print its path and exit
    [ "$force" = 0 ] && [ -x "$out/qemu-system-x86_64" ] || return 0
    [ "$qtests" = 0 ] || [ -f "$out/.qtests" ] || return 0
    ln -sfn "$hash" "$CACHE/qemu/$link"
    say "up to date: $out/qemu-system-x86_64 ($((SECONDS - t_start))s)"
    if [ "$run_qtests" = 1 ]; then run_qtests_now || exit 1; fi
    echo "$out/qemu-system-x86_64"
    exit 0
}
use_cached

# ---------------------------------------------------------------- 3. backend (static, -fPIC)
export PKG_CONFIG_PATH=${PKG_CONFIG_PATH:-}
# The plain variant shares the work tree of the device variant (switching is incremental), so
# it builds the backend too: the configure environment must be identical.
bvariant=default
[ "${variant%asan}" != "$variant" ] && bvariant=asan

# One QEMU build at a time (two ninjas in one build dir race, a second run would publish
# whatever the first had linked so far, and two builds side by side share the machine's
# cores). Wait for it, then re-check: it may have produced exactly what we want.
mkdir -p "$CACHE/work"
lock_or_wait "$CACHE/work/qemu-build.lock" "another QEMU build" || use_cached
# Sources edited while this waited for the lock are what gets built: key the output by them,
# not by the hash taken before the wait (it would publish new code under an old key).
new_hash=$(hash_inputs | sha256sum | cut -c1-16)
if [ "$new_hash" != "$hash" ]; then
    say "sources changed while waiting for the build lock: $hash -> $new_hash"
    hash=$new_hash
    out=$CACHE/qemu/$hash
    use_cached
fi
if true; then
    # in the checkout, so the compiler sees the same relative paths in every clone (ccache
    # hits in CI's fresh clones; scripts/lib.sh use_ccache)
    bdir=$ROOT/build-qemu-backend/$bvariant
    sanitize=none optimization=2
    [ "$bvariant" = asan ] && sanitize=address,undefined optimization=1
    # A meson build dir belongs to one source tree: another checkout (CI's fresh clone) must
    # not silently compile the sources of the previous one.
    if [ -f "$bdir/build.ninja" ] && [ "$(cat "$bdir/.sharegpu-source" 2>/dev/null)" != "$ROOT" ]; then
        say "host backend build dir was configured for another checkout: reconfiguring"
        rm -rf "$bdir"
    fi
    if [ ! -f "$bdir/build.ninja" ]; then
        say "configuring host backend ($bdir, b_sanitize=$sanitize)"
        meson setup "$bdir" "$ROOT" --buildtype=debugoptimized -Db_sanitize="$sanitize" \
            -Doptimization="$optimization" \
            >"$CACHE/backend-$bvariant-setup.log" 2>&1 || {
            tail -30 "$CACHE/backend-$bvariant-setup.log" >&2; exit 1; }
        echo "$ROOT" >"$bdir/.sharegpu-source"
    fi
    say "building host backend and broker client static libraries, broker daemon"
    nice -n 10 ninja -C "$bdir" -j "$jobs" host-backend/libsharegpu-backend.a \
        host-backend/broker/libsharegpu-broker-client.a host-backend/broker/sharegpu-broker >&2
    pcdir=$bdir/meson-uninstalled
    [ -f "$pcdir/sharegpu-backend-uninstalled.pc" ] ||
        die "$pcdir/sharegpu-backend-uninstalled.pc missing"
    # pkg-config prefers NAME-uninstalled.pc; QEMU asks for 'sharegpu-backend'.
    export PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    pkg-config --exists sharegpu-backend sharegpu-broker-client ||
        die "pkg-config cannot resolve sharegpu-backend and sharegpu-broker-client"
    backend_libs=$(pkg-config --static --libs sharegpu-backend sharegpu-broker-client)
fi

# ---------------------------------------------------------------- 4. patched work tree
work=$CACHE/work/$bvariant
src=$work/src
bld=$work/build
stamp_pristine=$work/.pristine
if [ ! -f "$stamp_pristine" ] || [ "$(cat "$stamp_pristine")" != "$debver" ]; then
    say "creating work tree $src from pristine source"
    rm -rf "$work"
    mkdir -p "$work"
    cp -a "$pristine" "$src"
    rm -f "$src/.sharegpu-unpacked"
    echo "$debver" >"$stamp_pristine"
fi

# The overlay = every file the patches touch (patched) + device files. Only files whose content
# differs from the work tree are rewritten (keeps mtimes, so ninja rebuilds only what changed);
# files overlaid last time but not now are restored from pristine (or removed).
overlay=$(mktemp -d "$work/overlay.XXXXXX")
at_exit "rm -rf $(printf %q "$overlay")"
for p in "${patches[@]}"; do
    # paths from the +++ lines, minus the first component (-p1)
    sed -n 's/^+++ \([^\t ]*\).*/\1/p' "$p" | cut -d/ -f2- | while read -r f; do
        [ -e "$overlay/$f" ] && continue
        mkdir -p "$overlay/$(dirname "$f")"
        if [ -f "$pristine/$f" ]; then cp -p "$pristine/$f" "$overlay/$f"; fi
    done
    patch -s -p1 -d "$overlay" --no-backup-if-mismatch <"$p" ||
        die "$(basename "$p") does not apply"
done
if [ "$plain" = 0 ]; then
    # device/ -> hw/misc/sharegpu/ (except qapi/ and tests/), the contract header beside it
    mkdir -p "$overlay/hw/misc/sharegpu"
    (cd "$ROOT/device" && find . -type f -not -path './tests/*' -not -path './qapi/*' \
        -not -name '*.md' -print) | while read -r f; do
        mkdir -p "$overlay/hw/misc/sharegpu/$(dirname "$f")"
        cp "$ROOT/device/$f" "$overlay/hw/misc/sharegpu/$f"
    done
    cp "$ROOT/include/sharegpu_hw.h" "$overlay/hw/misc/sharegpu/sharegpu_hw.h"
    # The backend's C API header goes beside the device: the device links the backend
    # through pkg-config but takes no compile flags from it (QEMU's other objects keep
    # identical command lines, so ccache and ninja stay warm across backend changes).
    cp "$ROOT/host-backend/include/sharegpu/backend.h" "$overlay/hw/misc/sharegpu/sharegpu-backend.h"
    cp "$ROOT/host-backend/include/sharegpu/broker-client.h" \
        "$overlay/hw/misc/sharegpu/sharegpu-broker-client.h"
    if [ -d "$ROOT/device/qapi" ]; then
        cp "$ROOT"/device/qapi/*.json "$overlay/qapi/"
    fi
    if [ -d "$ROOT/device/tests" ]; then
        mkdir -p "$overlay/tests/qtest"
        for f in "$ROOT"/device/tests/*.c; do cp "$f" "$overlay/tests/qtest/"; done
        cp "$ROOT/include/sharegpu_hw.h" "$overlay/tests/qtest/sharegpu_hw.h"
    fi
fi
(cd "$overlay" && find . -type f | sed 's|^\./||' | sort) >"$work/.overlay.new"
touch "$work/.overlay"
changed=0
while read -r f; do
    if ! cmp -s "$overlay/$f" "$src/$f"; then
        mkdir -p "$src/$(dirname "$f")"
        cp "$overlay/$f" "$src/$f"
        changed=$((changed + 1))
    fi
done <"$work/.overlay.new"
comm -23 "$work/.overlay" "$work/.overlay.new" | while read -r f; do
    if [ -f "$pristine/$f" ]; then cp "$pristine/$f" "$src/$f"; else rm -f "$src/$f"; fi
done
mv "$work/.overlay.new" "$work/.overlay"
say "work tree: ${#patches[@]} patches, $(wc -l <"$work/.overlay") overlaid files, $changed rewritten"

# The backend's link flags are resolved when QEMU's meson runs, and meson caches the
# lookup: when they change (a new dependency of the backend, e.g. virglrenderer), clear
# that cache and have ninja re-run meson.
if [ "$plain" = 0 ] && [ -x "$bld/pyvenv/bin/meson" ] &&
   [ "$(cat "$work/.backend-libs" 2>/dev/null)" != "$backend_libs" ]; then
    "$bld/pyvenv/bin/meson" configure --clearcache "$bld" >/dev/null
    touch "$src/meson.build"
fi
echo "$backend_libs" >"$work/.backend-libs"

# ---------------------------------------------------------------- 5. configure + build
want_conf="${conf[*]}"
if [ ! -f "$bld/build.ninja" ] || [ "$(cat "$work/.configured" 2>/dev/null)" != "$want_conf" ]; then
    say "configuring QEMU: ${conf[*]}"
    rm -rf "$bld"
    mkdir -p "$bld"
    (cd "$bld" && nice -n 10 "$src/configure" --python=/usr/bin/python3 --cc="ccache cc" --cxx="ccache c++" \
        --objcc="ccache cc" "${conf[@]}") >"$work/configure.log" 2>&1 || {
        tail -40 "$work/configure.log" >&2; exit 1; }
    echo "$want_conf" >"$work/.configured"
fi
# meson replaces PKG_CONFIG_PATH with its pkg_config_path option on every regeneration (the
# patched meson.build files trigger one), so the backend's .pc dir must be that option.
if [ "$("$bld/pyvenv/bin/meson" introspect --buildoptions "$bld" 2>/dev/null \
        | python3 -c 'import json,sys; print(":".join(next((o["value"] for o in json.load(sys.stdin) if o["name"] == "pkg_config_path"), [])))' 2>/dev/null)" != "$pcdir" ]; then
    say "setting pkg_config_path=$pcdir"
    "$bld/pyvenv/bin/meson" configure "$bld" -Dpkg_config_path="$pcdir" >&2
fi
export CCACHE_BASEDIR=$CACHE CCACHE_NOHASHDIR=1
targets=(qemu-system-x86_64)
if [ "$qtests" = 1 ]; then
    # SHAREGPU_QTESTS: space-separated qtest names (default: ours)
    for t in ${SHAREGPU_QTESTS:-sharegpu-test sharegpu-fuzz-test}; do targets+=("tests/qtest/$t"); done
fi
say "building (${#targets[@]} targets, -j$jobs, nice 10)"
t_build=$SECONDS
# ninja's own status line ([n/m]) is the progress indicator
nice -n 10 ninja -C "$bld" -j "$jobs" "${targets[@]}" >&2
say "ninja finished in $((SECONDS - t_build))s"

# ---------------------------------------------------------------- 6. publish
mkdir -p "$out.tmp"
cp "$bld/qemu-system-x86_64" "$out.tmp/"
if [ "$qtests" = 1 ]; then
    mkdir -p "$out.tmp/qtest"
    for t in "${targets[@]:1}"; do cp "$bld/$t" "$out.tmp/qtest/"; done
    # the broker daemon the multi-VM qtests start (SHAREGPU_BROKER, scripts/qemu-tests.sh)
    if [ "$plain" = 0 ]; then
        cp "$bdir/host-backend/broker/sharegpu-broker" "$out.tmp/qtest/"
    fi
    # QTEST_QEMU_BINARY must end in qemu-system-ARCH: a wrapper adds the firmware paths
    # (Debian's +ds source has no pc-bios blobs).
    mkdir -p "$out.tmp/qtest/bin"
    printf '#!/bin/sh\nexec "%s" -L /usr/share/qemu -L /usr/share/seabios "$@"\n' \
        "$out/qemu-system-x86_64" >"$out.tmp/qtest/bin/qemu-system-x86_64"
    chmod +x "$out.tmp/qtest/bin/qemu-system-x86_64"
    touch "$out.tmp/.qtests"
fi
{
    echo "qemu $debver"
    echo "variant $variant"
    echo "configure ${conf[*]}"
    echo "source $src"
    echo "build $bld"
    echo "repo $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
} >"$out.tmp/build-info.txt"
rm -rf "$out"
mv "$out.tmp" "$out"
ln -sfn "$hash" "$CACHE/qemu/$link"
# keep the newest 6 outputs (and whatever a current* link points at)
keep=$(for l in "$CACHE"/qemu/current*; do readlink "$l"; done)
ls -1t "$CACHE/qemu" | grep -E '^[0-9a-f]{16}$' | tail -n +7 | while read -r d; do
    grep -qx "$d" <<<"$keep" || rm -rf "${CACHE:?}/qemu/$d"
done
say "done in $((SECONDS - t_start))s: $out/qemu-system-x86_64 (qemu/$link)"
exec 9>&-  # the work tree is free again (the tests below only use the published output)
if [ "$run_qtests" = 1 ]; then run_qtests_now || exit 1; fi
echo "$out/qemu-system-x86_64"
