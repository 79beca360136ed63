#!/usr/bin/env bash
# The whole suite. Skipped tests count as failures (EVF_SAM_FAIL_ON_SKIP=1, see test/conftest.py):
# on this machine kind every test, ROS tests included, must run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -n "${AMENT_PREFIX_PATH:-}" ] || { echo "run_tests: source ./env.sh first (or use 'make test')" >&2; exit 2; }
export EVF_SAM_FAIL_ON_SKIP="${EVF_SAM_FAIL_ON_SKIP:-1}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec python -m pytest test "$@"
