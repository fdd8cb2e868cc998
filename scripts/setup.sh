#!/usr/bin/env bash
# Creates .venv (if missing) and installs ssm_keras into it, with the extras
# the tests exercise: test, onnx (the ONNX export), litert (the TFLite runtime).
# uv installs them (about 20 s on a 2-core AMD Zen 3, where pip took about
# 60 s); pip does where uv cannot be installed or cannot reach the index (uv
# does not read pip.conf). Neither byte-compiles the modules: compileall does,
# on every core (31 s there). They must be compiled here: where
# PYTHONDONTWRITEBYTECODE is set, every test process would compile TensorFlow
# from source (the suite took 690 s instead of 555).
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv 2>/dev/null || [ -x .venv/bin/python ]
if ! { .venv/bin/python -m pip install --quiet uv >/dev/null 2>&1 &&
       .venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[test,onnx,litert]"; }; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet --no-compile -e ".[test,onnx,litert]"
fi
# A file that does not compile (pip skips those as well) is no error here.
site_packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -m compileall -q -j 0 "$site_packages" >/dev/null || true
.venv/bin/python -c "import ssm_keras, tensorflow as tf, keras; print(f'ssm_keras {ssm_keras.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}')"
