#!/usr/bin/env bash
# Builds the sharegpu debug guest kernel (Linux 6.12 from Debian's linux-source-6.12).
#
# usage: scripts/build-guest-kernel.sh [-j N] [--config-only] [--prune]
#   -j N           parallel jobs (default: nproc; make runs under `nice -n 10`)
#   --config-only  only generate + verify .config (fast; for editing the fragment)
#   --prune        afterwards delete cached kernels other than the current one
#
# Config = `make ARCH=x86_64 tinyconfig` + guest-kernel/config.fragment (merge_config.sh)
# + olddefconfig, with patches/linux/*.patch applied to the source first. Fails if any
# option of the fragment did not end up in the final .config.
#
# Output, cached under a key that hashes what determines the kernel: the tarball (name, size,
# mtime) and linux-source-6.12 package version, gcc's version, the fragment, the patches and
# RECIPE below. Not this file's text: bump RECIPE with any change to how the kernel is
# configured or built (the make steps, their variables, the config check); messages, options
# and scripts/lib.sh then cost no rebuild (a cold one: 7.75 minutes on 2 idle cores).
#   ${SHAREGPU_CACHE:-~/.cache/sharegpu}/kernel/<hash>/bzImage
#   .../kernel/<hash>/linux/       prepared in-tree build dir (source + objects +
#                                  Module.symvers): make -C <it> ARCH=x86_64 M=$PWD modules
#   .../kernel/<hash>/linux/usr/include/  sanitized uapi headers (drm/drm.h, linux/dma-buf.h,
#                                  ...) for guest tests: gcc -static -I$SHAREGPU_KERNEL_HEADERS
#   .../kernel/<hash>/config       final .config;  build.log  full make log
#   .../kernel/<hash>/kernel.env   SHAREGPU_KERNEL_IMAGE=... SHAREGPU_KERNEL_BUILD=...
#                                  SHAREGPU_KERNEL_RELEASE=... SHAREGPU_KERNEL_HEADERS=...
#   .../kernel/current -> <hash>   (symlink, updated after every successful run)
# A complete cache entry (stamp file "complete", written last) makes the script exit in
# about a second. stdout carries only the kernel.env lines, so
#   eval "$(scripts/build-guest-kernel.sh)"   works; progress goes to stderr.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" guest-kernel

RECIPE=1  # the version of the build recipe (see above)
TARBALL=${SHAREGPU_KERNEL_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
FRAGMENT=$ROOT/guest-kernel/config.fragment
PATCHDIR=$ROOT/patches/linux
JOBS=$(nproc)
CONFIG_ONLY=0
PRUNE=0

while [ $# -gt 0 ]; do
    case "$1" in
        -j) JOBS=$2; shift 2 ;;
        -j*) JOBS=${1#-j}; shift ;;
        --config-only) CONFIG_ONLY=1; shift ;;
        --prune) PRUNE=1; shift ;;
        *) other_arg "$1" ;;
    esac
done
START=$(date +%s)

[ -f "$TARBALL" ] || die "$TARBALL missing (run scripts/setup-host.sh: package linux-source-6.12)"
[ -f "$FRAGMENT" ] || die "$FRAGMENT missing"
shopt -s nullglob
PATCHES=("$PATCHDIR"/*.patch)
shopt -u nullglob

# ---- cache key ---------------------------------------------------------------------
KEY=$(
    {
        echo "tarball $(basename "$TARBALL") $(stat -c '%s %Y' "$TARBALL")"
        dpkg-query -W -f='${Package} ${Version}\n' linux-source-6.12 2>/dev/null || true
        gcc --version | head -n1
        echo "fragment"; cat "$FRAGMENT"
        for p in "${PATCHES[@]}"; do echo "patch $(basename "$p")"; cat "$p"; done
        echo "recipe $RECIPE"
    } | sha256sum | cut -c1-16
)
KROOT=$CACHE/kernel
OUT=$KROOT/$KEY
SRC=$OUT/linux
STAMP=$OUT/complete

write_current() {
    ln -sfn "$KEY" "$KROOT/.current.tmp.$$" && mv -Tf "$KROOT/.current.tmp.$$" "$KROOT/current"
}

emit_env() { cat "$OUT/kernel.env"; }
use_cached() { # a complete entry: make it current, print its kernel.env and exit
    [ "$CONFIG_ONLY" = 0 ] && [ -f "$STAMP" ] || return 0
    write_current
    say "cached: $OUT ($(($(date +%s) - START))s)"
    emit_env
    exit 0
}

use_cached
mkdir -p "$OUT"
lock_or_wait "$OUT.lock" "another build of $KEY" || use_cached

# ---- source tree ----------------------------------------------------------------------
if [ ! -f "$SRC/.sharegpu-prepared" ]; then
    rm -rf "$SRC" "$SRC.tmp"
    mkdir -p "$SRC.tmp"
    say "extracting $TARBALL"
    tar -xf "$TARBALL" -C "$SRC.tmp" --strip-components=1
    for p in "${PATCHES[@]}"; do
        say "applying $(basename "$p")"
        patch -d "$SRC.tmp" -p1 --forward --batch --quiet < "$p" || die "patch $p failed"
    done
    touch "$SRC.tmp/.sharegpu-prepared"
    mv "$SRC.tmp" "$SRC"
fi

export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
export CCACHE_BASEDIR=$SRC
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
export KBUILD_BUILD_USER=sharegpu KBUILD_BUILD_HOST=sharegpu
MAKE=(nice -n 10 make -C "$SRC" ARCH=x86_64 CC="ccache gcc")

# ---- config ---------------------------------------------------------------------------
say "configuring: tinyconfig + $(basename "$FRAGMENT")"
"${MAKE[@]}" -s tinyconfig >"$OUT/config.log" 2>&1 || { cat "$OUT/config.log" >&2; die "tinyconfig failed"; }
(cd "$SRC" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$FRAGMENT") >>"$OUT/config.log" 2>&1 \
    || { cat "$OUT/config.log" >&2; die "merge_config failed"; }
"${MAKE[@]}" -s olddefconfig >>"$OUT/config.log" 2>&1 || { cat "$OUT/config.log" >&2; die "olddefconfig failed"; }

check_config() { # every CONFIG_X=v / "# CONFIG_X is not set" line of the fragment must hold
    local missing=0 line sym
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*)
                if ! grep -qxF "$line" "$1"; then
                    sym=${line%%=*}
                    echo "  want $line, got: $(grep -E "^$sym=|^# $sym is not set" "$1" || echo '(absent: unmet dependency)')" >&2
                    missing=1
                fi ;;
            "# CONFIG_"*" is not set")
                sym=${line#\# }; sym=${sym%% *}
                if grep -qE "^$sym=" "$1"; then
                    echo "  want $line, got: $(grep -E "^$sym=" "$1")" >&2
                    missing=1
                fi ;;
        esac
    done <"$FRAGMENT"
    return $missing
}
check_config "$SRC/.config" || die "final .config lacks required options (see above; dependency missing in $FRAGMENT?)"
cp "$SRC/.config" "$OUT/config"
say "config OK: $(grep -c '=y$' "$SRC/.config") built-in options, all $(grep -cE '^CONFIG_|^# CONFIG_' "$FRAGMENT") fragment lines satisfied"
if [ "$CONFIG_ONLY" = 1 ]; then
    say "config only: $OUT/config"
    exit 0
fi

# ---- build ----------------------------------------------------------------------------
say "building with -j$JOBS (nice 10, ccache in $CCACHE_DIR); full log: $OUT/build.log"
set +e
progress() { # one line per 100 compiled objects; errors/warnings verbatim
    local n=0 line
    while IFS= read -r line; do
        case "$line" in
            "  CC "*|"  AS "*|"  LD "*|"  AR "*)
                n=$((n + 1))
                [ $((n % 100)) -ne 0 ] || printf '[guest-kernel] %5d objects, %4ds\n' "$n" $(($(date +%s) - START)) ;;
            *error*|*warning*|*Error*|make*\*\*\**) printf '%s\n' "$line" ;;
        esac
    done
    printf '[guest-kernel] %5d objects total\n' "$n"
}
"${MAKE[@]}" -j"$JOBS" all headers 2>&1 | tee "$OUT/build.log" | progress >&2
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    tail -n 40 "$OUT/build.log" >&2
    die "kernel build failed (rc=$rc); full log $OUT/build.log"
fi
check_config "$SRC/.config" || die "config changed during build?"

cp "$SRC/arch/x86/boot/bzImage" "$OUT/bzImage"
[ -f "$SRC/Module.symvers" ] || die "Module.symvers missing: tree not usable for M= builds"
[ -f "$SRC/usr/include/drm/drm.h" ] || die "uapi headers missing in $SRC/usr/include"
RELEASE=$(cat "$SRC/include/config/kernel.release")
cat >"$OUT/kernel.env" <<EOF
SHAREGPU_KERNEL_IMAGE=$OUT/bzImage
SHAREGPU_KERNEL_BUILD=$SRC
SHAREGPU_KERNEL_RELEASE=$RELEASE
SHAREGPU_KERNEL_HEADERS=$SRC/usr/include
EOF
touch "$STAMP"
write_current
if [ "$PRUNE" = 1 ]; then
    for d in "$KROOT"/*/; do
        d=${d%/}
        [ -L "$d" ] || [ "$(basename "$d")" = "$KEY" ] || { say "pruning $d"; rm -rf "$d" "$d.lock"; }
    done
fi
say "done: $RELEASE in $(($(date +%s) - START))s; $(ccache -s 2>/dev/null | grep -iE '^ *hits' | head -n1 | xargs || true)"
emit_env
