#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo (examples/loop_tour).
# Extra arguments go to the demo, e.g. scripts/demo.sh --backend libev
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target loop_tour
exec ./build/release/examples/loop_tour "$@"
