#!/usr/bin/env bash
# `colcon build` + `colcon test` of this package in a scratch workspace, the way a ROS user
# builds it (copy install, tests run against the install space).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WS="${EVF_SAM_COLCON_WS:-$ROOT/build/colcon_ws}"
rm -rf "$WS" && mkdir -p "$WS/src"
ln -s "$ROOT" "$WS/src/evf_sam_ros"
cd "$WS"
# The tests must see the workspace's install space, not this checkout's source tree.
export PYTHONPATH="${PYTHONPATH#"$ROOT:"}"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV"
colcon build --event-handlers console_direct- --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" > build.log 2>&1 \
  || { tail -40 build.log; exit 1; }
EVF_SAM_FAIL_ON_SKIP=1 colcon test --event-handlers console_direct+ --return-code-on-test-failure \
  --pytest-args -q
colcon test-result --verbose
