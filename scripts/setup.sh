#!/usr/bin/env bash
# Creates .venv (if missing) and installs ssm_keras into it, with the extras
# the tests exercise: test, onnx (the ONNX export), litert (the TFLite runtime).
# pip byte-compiles every installed module (55 of the install's 95 s on an AMD
# Zen 3). Keep it: with --no-compile and PYTHONDONTWRITEBYTECODE set, every
# test process compiled TensorFlow from source and the suite took 690 s, not 555.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv 2>/dev/null || [ -x .venv/bin/python ]
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e ".[test,onnx,litert]"
.venv/bin/python -c "import ssm_keras, tensorflow as tf, keras; print(f'ssm_keras {ssm_keras.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}')"
