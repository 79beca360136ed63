#!/usr/bin/env bash
# CI's old-stack leg: the model core and the node tests in a second venv holding the OLDEST
# versions requirements/ros-distro.txt allows (requirements/old-stack.txt: numpy 1.23, OpenCV 4.5,
# transformers 5.0, ...), made like the README's ROS install (venv --system-site-packages).
# It reuses this checkout's colcon build (install/, from `make setup`); plus a static check that
# the code runs on Python 3.10 (vermin), which is not installable on this machine kind.
# Nothing is deselected: every test of the files below must pass (and, as in `make test`, a skip
# fails the run).
#
#   scripts/old_stack_test.sh [pytest args]      (after `make setup`)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -f env.sh ] || { echo "old_stack_test: run 'make setup' first" >&2; exit 2; }
PYTHON="${PYTHON:-python3}"
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
OLD="${EVF_SAM_OLD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/evf_sam_ros/venv-oldstack-py$PYVER}"
REQ_HASH=$(cat requirements/old-stack.txt requirements/ros.txt requirements/test.txt | sha256sum | cut -c1-16)
if [ ! -x "$OLD/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$OLD"
fi
if [ "$(cat "$OLD/.evf_sam_ros-requirements" 2>/dev/null)" != "$REQ_HASH" ]; then
  echo "old_stack_test: installing the oldest supported versions into $OLD"
  set +o pipefail
  "$OLD/bin/python" -m pip install --disable-pip-version-check -q \
      --only-binary=numpy,opencv-python-headless,pillow,scipy,torch \
      -r requirements/old-stack.txt -r requirements/ros.txt -r requirements/test.txt vermin==1.9.2 2>&1 \
    | { grep -v "is ignored" || true; }
  rc=${PIPESTATUS[0]}
  set -o pipefail
  [ "$rc" -eq 0 ] || { echo "old_stack_test: pip install failed" >&2; exit 1; }
  echo "$REQ_HASH" > "$OLD/.evf_sam_ros-requirements"
fi
NEW=$(. ./env.sh && echo "$VIRTUAL_ENV")
# env.sh with the old venv in place of the pinned one (same Python, same colcon build). The standard
# ROS 2 tools that every ROS install has (rosidl_runtime_py, which the node needs to resolve its
# transcript_type; launch, ros2cli) stay those of ../shared/ros2-tools built into the pinned venv:
# pure Python or built against the same ROS wheels (requirements/ros.txt), and nothing of
# old-stack.txt (numpy, torch, ...) is among them.
sed "/ros2-tools/!s#$NEW#$OLD#g" env.sh > "$OLD/env-oldstack.sh"
# shellcheck disable=SC1091
. "$OLD/env-oldstack.sh"
echo "old_stack_test: $("$OLD/bin/python" -c 'import numpy, cv2, torch, transformers, PIL
print("numpy", numpy.__version__, "opencv", cv2.__version__, "torch", torch.__version__,
      "transformers", transformers.__version__, "pillow", PIL.__version__)')"
echo "old_stack_test: vermin --target=3.10 (the code must run on Humble's Python 3.10)"
"$OLD/bin/vermin" --no-tips --violations --target=3.10- --eval-annotations --backport typing_extensions \
  evf_sam_ros launch test bench scripts
export EVF_SAM_FAIL_ON_SKIP="${EVF_SAM_FAIL_ON_SKIP:-1}" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Not here: test_model_backends.py, the optional ONNX/onnxruntime/OpenVINO backends, which come from
# requirements/deploy.txt (exact pins for this repository's venv), not from ros-distro.txt's ranges.
TESTS=()
for f in test/test_model_*.py test/test_node_*.py test/test_geometry.py test/test_cli.py test/test_pipeline.py \
         test/test_commands.py test/test_default_model_quality.py; do
  [ "$f" = test/test_model_backends.py ] || TESTS+=("$f")
done
exec "$OLD/bin/python" -m pytest "${TESTS[@]}" -q -p no:cacheprovider "$@"
