"""The chief of the distributed search of `test_tuning.py`.

    python tests/quick_chief.py [flags of python -m ssm_keras.tune ...]

Runs `ssm-tune` (`ssm_keras.cli.tune`) with Keras Tuner's oracle server
looking every 0.5 s, not every 20 s, whether the workers have left once one
was told to stop: the test's search then ends with its workers, not 20 s
or more later. Nothing else of the chief changes.
"""

import time

from keras_tuner.src.distribute import oracle_chief

from ssm_keras.cli import tune


class _ShortSleeps:
    """`time` as `oracle_chief` uses it, each sleep at most 0.5 s."""

    @staticmethod
    def sleep(seconds):
        time.sleep(min(seconds, 0.5))


if __name__ == "__main__":
    oracle_chief.time = _ShortSleeps
    tune.cli()
