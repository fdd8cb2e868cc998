#!/usr/bin/env bash
# Creates .venv (if missing) and installs ssm_keras into it, with the extras
# the tests exercise: test, onnx (the ONNX export), litert (the TFLite runtime).
# --no-compile: pip would byte-compile every module of TensorFlow and the rest,
# most of which no test imports (the install took 95 s instead of 40 s on an
# AMD Zen 3); Python compiles what is imported, once, on first use.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv 2>/dev/null || [ -x .venv/bin/python ]
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --no-compile -e ".[test,onnx,litert]"
.venv/bin/python -c "import ssm_keras, tensorflow as tf, keras; print(f'ssm_keras {ssm_keras.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}')"
