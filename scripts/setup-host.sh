#!/usr/bin/env bash
# Installs every Debian package the project needs (idempotent).
# Extra suites are derived from the machine's own debian.sources so the repo never names a
# registry host: bookworm-backports (meson >= 1.5 for QEMU 10) and trixie as deb-src only
# (the QEMU 10.0 and IGT 2.0 source packages; scripts/build-igt.sh takes Debian's prebuilt
# IGT tests from unstable through its own private apt when the IGT source is not served).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" setup-host

src=$DEBIAN_SOURCES
extra=/etc/apt/sources.list.d/sharegpu-extra.sources
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

if [ -f "$src" ] && ! [ -f "$extra" ]; then
    { debian_suite_entry deb bookworm-backports; debian_suite_entry deb-src trixie; } | $SUDO tee "$extra" >/dev/null
    need_update=1
fi

stamp=/var/lib/apt/periodic/sharegpu-update-stamp
if [ -n "${need_update:-}" ] || ! [ -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]; then
    $SUDO apt-get update -q
    $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
fi

pkgs=(
    build-essential g++ pkg-config ninja-build ccache git python3 python3-venv
    googletest libgtest-dev libgmock-dev libbenchmark-dev
    clang-format
    # QEMU 10 build
    dpkg-dev libglib2.0-dev libpixman-1-dev libslirp-dev libfdt-dev zlib1g-dev
    python3-setuptools flex bison qemu-system-data seabios
    # guest kernel + image
    linux-source-6.12 bc libelf-dev libssl-dev cpio busybox-static kmod xz-utils
    # scripts/run-guest.sh: QEMU's thread backtraces when a guest freezes
    gdb
    # the virgl engine: libvirglrenderer on EGL surfaceless, Mesa's llvmpipe without a GPU
    libvirglrenderer-dev libegl-mesa0 libgl1-mesa-dri
    # IGT 2.0 (scripts/build-igt.sh; meson, ninja, python3 above): the libraries libigt needs
    libdrm-dev libpciaccess-dev libkmod-dev libproc2-dev libdw-dev libpixman-1-dev
    libcairo2-dev libudev-dev
    # scripts/sharegpu-graph.py renders the sharing graph; sparse checks the driver's __le use
    graphviz sparse
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# meson >= 1.5 (QEMU 10 requires it) comes from bookworm-backports.
if ! meson --version 2>/dev/null | awk -F. '{ exit !($1 > 1 || ($1 == 1 && $2 >= 5)) }'; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports meson
fi
