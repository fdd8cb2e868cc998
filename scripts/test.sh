#!/usr/bin/env bash
# Installs ssm_keras and runs the whole test suite (a few minutes on 2 cores).
#   bash scripts/test.sh [pytest arguments]
# Real data is read from $SSM_TEST_DATA (default: ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q --durations=10 tests "$@"
