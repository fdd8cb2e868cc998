#!/usr/bin/env bash
# Installs ssm_keras and runs the test suite in two processes, each test file
# in one of them (5 to 8 minutes of tests on 2 cores; see the README), all but the
# evaluations of the deeper conv entries on the 10,000 test images (marker
# `entries`; a later -m replaces this one).
#   bash scripts/test.sh [pytest arguments]    e.g. -n 4 for four processes
#   bash scripts/test.sh -m entries            those evaluations only
# Real data is read from $SSM_TEST_DATA (default: ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q --numprocesses=2 --dist=loadfile --durations=10 -m "not entries" tests "$@"
