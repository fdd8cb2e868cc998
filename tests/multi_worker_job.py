"""One worker of the multi-worker job of `test_distribute.py`.

    python tests/multi_worker_job.py OUT_DIR [training flags ...]

Parses the flags of `python -m ssm_keras.train`, trains the run for
`--epochs` - 1 epochs, then resumes it (`--resume`) to `--epochs`, both under
one `--strategy`; trains it again, uninterrupted, into `<--model_dir>-straight`;
and writes `OUT_DIR/worker<task index>.npz`: this worker's final weights of
the resumed run (`weight<i>`) and of the uninterrupted one (`straight<i>`),
its process id, and the strategy's `reduce` of `(index, [index, 2 index])`
with MEAN and `axis=None` and of the scalar `index` with MEAN and `axis=0`.
"""

import dataclasses
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from ssm_keras.cli import shell, train
from ssm_keras.training import config as ssm_config
from ssm_keras.training import distribute, trainer


class ModelRecorder(keras.callbacks.Callback):
    """Keeps each model it sees trained, in `models`."""

    def __init__(self):
        super().__init__()
        self.models = []

    def on_train_end(self, logs=None):
        self.models.append(self.model)


def main(out_dir, argv):
    shell.show_package_log()  # the notes, as the training command shows them
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values([sys.argv[0], *argv])
    config = shell.from_flags(ssm_config.TrainConfig, flag_values)
    strategy = distribute.get_strategy(config.strategy)
    index = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
    value = float(index)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: (tf.constant(value), tf.constant([value, 2 * value]))
    )
    pair = strategy.reduce("MEAN", per_replica, axis=None)
    scalar = strategy.reduce("MEAN", per_replica[0], axis=0)

    trained = ModelRecorder()
    trainer.run(dataclasses.replace(config, epochs=config.epochs - 1), strategy=strategy,
                 callbacks=[trained])
    trainer.run(dataclasses.replace(config, resume=True), strategy=strategy, callbacks=[trained])
    weights = {f"weight{i}": np.asarray(w) for i, w in enumerate(trained.models[-1].get_weights())}
    trainer.run(dataclasses.replace(config, model_dir=f"{config.model_dir}-straight"),
                strategy=strategy, callbacks=[trained])
    weights.update({f"straight{i}": np.asarray(w)
                    for i, w in enumerate(trained.models[-1].get_weights())})
    np.savez(os.path.join(out_dir, f"worker{index}.npz"), pid=os.getpid(),
             pair_scalar=pair[0].numpy(), pair_vector=pair[1].numpy(),
             scalar=scalar.numpy(), **weights)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
