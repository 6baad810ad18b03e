#!/usr/bin/env bash
# run.sh BUILD_DIR SOURCE_DIR WORK_DIR: installs the build into WORK_DIR/prefix,
# then configures, builds and runs the consumer project against it.
set -euo pipefail
build=$1 source=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$source/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
