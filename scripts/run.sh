#!/usr/bin/env bash
# `make run`: the main job. Installs what it needs, builds the host backend and runs its
# demo (two devices, export/import with zero copy, a move with move_notify, coherency
# barriers with and without).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
export CCACHE_DIR=${CCACHE_DIR:-${SHAREGPU_CACHE:-$HOME/.cache/sharegpu}/ccache}
export CC="ccache gcc" CXX="ccache g++"
[ -f build/build.ninja ] || meson setup build -Dwerror=true >/dev/null
nice ninja -C build host-backend/sharegpu-demo
./build/host-backend/sharegpu-demo
