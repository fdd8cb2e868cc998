#!/usr/bin/env bash
# Installs ssm_keras and trains the paper's FCN signed supermask on MNIST.
#   bash scripts/quickstart.sh [more train flags, e.g. --epochs=10]
# Data: $DATA_DIR (default ../shared/data); without local files,
# tensorflow_datasets downloads MNIST where the internet is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA_DIR=${DATA_DIR:-../shared/data}
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m ssm_keras.train --flagfile=flags/fcn_mnist_signed.flags \
  --data_dir="$DATA_DIR" --model_dir=runs/quickstart_fcn_mnist_signed "$@"
