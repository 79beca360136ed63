#!/usr/bin/env bash
# `colcon build` + `colcon test` of this package in a scratch workspace, as a ROS user builds it
# (copy install; the tests run against that workspace's install space, not this checkout's).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -n "${VIRTUAL_ENV:-}" ] || { echo "colcon_test: source ./env.sh first (or use 'make colcon-test')" >&2; exit 2; }
WS="${EVF_SAM_COLCON_WS:-${TMPDIR:-/tmp}/evf_sam_ros_colcon_ws}"
rm -rf "$WS" && mkdir -p "$WS/src"
ln -s "$ROOT" "$WS/src/evf_sam_ros"
cd "$WS"
# Only the venv underneath: nothing of this checkout's own build may leak into the workspace.
unset PYTHONPATH
export AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV" LD_LIBRARY_PATH="$VIRTUAL_ENV/lib"
# The ros2 CLI, launch and vision_msgs, as a ROS install has them (here: ../shared/ros2-tools,
# installed by scripts/setup.sh)
if [ -f "$VIRTUAL_ENV/ros2-tools/env.sh" ]; then . "$VIRTUAL_ENV/ros2-tools/env.sh"; fi
colcon build --event-handlers console_direct- desktop_notification- \
  --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" > build.log 2>&1 \
  || { tail -40 build.log; exit 1; }
export EVF_SAM_FAIL_ON_SKIP=1
colcon test --event-handlers console_direct+ desktop_notification- --return-code-on-test-failure
colcon test-result --verbose
