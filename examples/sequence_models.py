"""A Transformer or an LSTM on MNIST rows, trained normally and as a signed supermask.

Each MNIST image is a sequence of 28 rows of 28 pixels (scaled to [0, 1]).

- `transformer`: a Dense embedding to d=64, a learned position embedding,
  2 encoder blocks (pre-norm: LayerNormalization, MultiHeadAttention with 4
  heads of 16, residual; LayerNormalization, MLP 128-64, residual), a final
  LayerNormalization, mean pooling over the rows, a Dense classifier;
- `lstm`: LSTM(128) over the rows, a Dense classifier.

Each model is written as a user would write it (plain Keras layers; the
position embedding is a small layer of this file that holds an `Embedding`)
and run twice, with the same seed, data, batch size and epochs:

1. `weights`: trained normally (Adam, `--learning_rate`);
2. `signed_supermask`: `ssm_keras.supermask(model)` with its defaults: every
   kernel redrawn as a frozen random signed constant (`elus`, seed
   `--seed`), every other weight frozen, only the signed masks trained
   (Adam, `--mask_learning_rate`), with the paper's weight decay on the
   scores (`ssm_keras.decay_scores_only`, `--score_weight_decay`), which
   prunes.

Both learning rates follow a cosine from their value to 0 over the run, and
the decay of the scores (`weight_decay * lr_t / lr_0` a step) with them.

After every epoch both are evaluated on the test images. Writes
`--out/<model>.json` (the settings, and for each run: per epoch
`train_accuracy`, `test_accuracy`, `remaining_percent` and `seconds`; at
the end `trainable_weights`, `masked_weights`, `remaining_weights` and
`layers`, the rows of `ssm_keras.transforms.supermasking.summary`) and
`--out/<model>.png` (the curves):

    python examples/sequence_models.py --data_dir=../shared/data --model=transformer \\
        --out=sequence_results
"""

import argparse
import json
import os
import time

import keras
import numpy as np

import ssm_keras
from ssm_keras import data
from ssm_keras.transforms import supermasking


class AddPositions(keras.layers.Layer):
    """`x + E[t]` for the position `t` of each step: a learned position
    embedding, an `Embedding` of the step numbers made in `build`."""

    def build(self, input_shape):
        self.positions = keras.layers.Embedding(input_shape[1], input_shape[2],
                                                name="positions")
        self.positions.build((input_shape[1],))

    def call(self, inputs):
        return inputs + self.positions(keras.ops.arange(keras.ops.shape(inputs)[1]))


def transformer(seed, steps=28, features=28, classes=10, width=64, heads=4, blocks=2):
    """The Transformer classifier of the module docstring."""
    keras.utils.set_random_seed(seed)
    rows = keras.Input((steps, features), name="rows")
    x = AddPositions(name="add_positions")(keras.layers.Dense(width, name="embed")(rows))
    for block in range(1, blocks + 1):
        normed = keras.layers.LayerNormalization(name=f"norm_{block}a")(x)
        attended = keras.layers.MultiHeadAttention(
            heads, width // heads, name=f"attention_{block}")(normed, normed)
        x = keras.layers.Add(name=f"residual_{block}a")([x, attended])
        normed = keras.layers.LayerNormalization(name=f"norm_{block}b")(x)
        hidden = keras.layers.Dense(2 * width, activation="relu", name=f"mlp_{block}_in")(normed)
        x = keras.layers.Add(name=f"residual_{block}b")(
            [x, keras.layers.Dense(width, name=f"mlp_{block}_out")(hidden)])
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    return keras.Model(rows, keras.layers.Dense(classes, name="classifier")(x),
                       name="transformer")


def lstm(seed, steps=28, features=28, classes=10, units=128):
    """The LSTM classifier of the module docstring."""
    keras.utils.set_random_seed(seed)
    rows = keras.Input((steps, features), name="rows")
    x = keras.layers.LSTM(units, name="lstm")(rows)
    return keras.Model(rows, keras.layers.Dense(classes, name="classifier")(x), name="lstm")


MODELS = {"transformer": transformer, "lstm": lstm}


def as_rows(images):
    """uint8 images `(n, 28, 28, 1)` as float32 sequences `(n, 28, 28)` in [0, 1]."""
    return images[..., 0].astype("float32") / 255


class EpochRecord(keras.callbacks.Callback):
    """Per epoch: train and test accuracy, remaining weights (the
    supermask's, from `MaskMonitor`'s logs; 100% for trained weights) and
    the seconds of training."""

    def __init__(self, test):
        super().__init__()
        self.test = test
        self.record = {"train_accuracy": [], "test_accuracy": [], "remaining_percent": [],
                       "seconds": []}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self._start
        _, accuracy = self.model.evaluate(*self.test, batch_size=1000, verbose=0)
        self.record["train_accuracy"].append(float(logs["accuracy"]))
        self.record["test_accuracy"].append(float(accuracy))
        self.record["remaining_percent"].append(float(logs.get("remaining_percent", 100.0)))
        self.record["seconds"].append(round(seconds, 1))
        print(f"epoch {epoch + 1}: test accuracy {100 * accuracy:.2f}%, remaining "
              f"{self.record['remaining_percent'][-1]:.2f}%, {seconds:.0f} s", flush=True)


def cosine_schedule(learning_rate, steps):
    """`lr_t = learning_rate * (1 + cos(pi * t / steps)) / 2` at step `t`:
    from `learning_rate` to 0 over the run, so the last epochs settle."""
    return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)


def train(model, train_split, test_split, args, masked):
    """Compiles and fits `model`; returns its record."""
    steps = args.epochs * -(-len(train_split[1]) // args.batch_size)
    if masked:
        optimizer = ssm_keras.decay_scores_only(
            keras.optimizers.Adam(cosine_schedule(args.mask_learning_rate, steps)), model,
            args.score_weight_decay)
        callbacks = [ssm_keras.MaskMonitor(None)]
    else:
        optimizer = keras.optimizers.Adam(cosine_schedule(args.learning_rate, steps))
        callbacks = []
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    epochs = EpochRecord(test_split)
    model.fit(*train_split, epochs=args.epochs, batch_size=args.batch_size,
              callbacks=[*callbacks, epochs], verbose=0)
    rows = supermasking.summary(model).rows
    return {**epochs.record,
            "trainable_weights": sum(row["trainable"] for row in rows),
            "masked_weights": sum(row["masked"] for row in rows),
            "remaining_weights": sum(row["remaining"] for row in rows),
            "layers": rows}


def plot(report, path, dpi):
    """The test accuracy of both runs and the supermask's remaining weights,
    per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    runs = report["runs"]
    epochs = np.arange(1, len(runs["weights"]["test_accuracy"]) + 1)
    figure, (accuracy, remaining) = pyplot.subplots(1, 2, figsize=(9, 3.4))
    for name, label in (("weights", "trained weights"), ("signed_supermask", "signed supermask")):
        accuracy.plot(epochs, 100 * np.array(runs[name]["test_accuracy"]), "o-", label=label)
    accuracy.set(xlabel="epoch", ylabel="test accuracy (%)",
                 title=f"{report['model']} on MNIST rows")
    accuracy.grid(alpha=0.3)
    accuracy.legend()
    for axes in (accuracy, remaining):
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    remaining.plot(epochs, runs["signed_supermask"]["remaining_percent"], "o-", color="C1")
    remaining.set(xlabel="epoch", ylabel="remaining weights (%)", ylim=(0, None),
                  title="signed supermask: weights kept or inverted")
    remaining.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    pyplot.close(figure)


def run(args):
    """Both runs of `args.model`; writes and returns the report."""
    splits = data.load_splits("mnist", data_dir=args.data_dir, validation_size=0,
                              seed=args.seed, max_examples=args.max_examples)
    train_split = (as_rows(splits.train[0]), splits.train[1])
    test_split = (as_rows(splits.test[0]), splits.test[1])
    build = MODELS[args.model]
    runs = {"weights": train(build(args.seed), train_split, test_split, args, masked=False)}
    supermask = ssm_keras.supermask(build(args.seed), seed=args.seed,
                                    init_factor=args.init_factor)
    runs["signed_supermask"] = train(supermask, train_split, test_split, args, masked=True)
    report = {"model": args.model, "settings": vars(args),
              "train_examples": len(train_split[1]), "test_examples": len(test_split[1]),
              "runs": runs}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.model}.json"), "w") as file:
        json.dump(report, file, indent=1)
    plot(report, os.path.join(args.out, f"{args.model}.png"), args.dpi)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="folder with mnist/ (IDX files)")
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--out", required=True, help="folder for <model>.json and .png")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam, weights")
    parser.add_argument("--mask_learning_rate", type=float, default=3e-3, help="Adam, scores")
    parser.add_argument("--score_weight_decay", type=float, default=1e-3,
                        help="the paper's weight decay on the scores")
    parser.add_argument("--init_factor", type=float, default=None,
                        help="the elus factor of the supermask's kernels (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_examples", type=int, default=None,
                        help="at most this many training and test examples")
    parser.add_argument("--dpi", type=int, default=90)
    args = parser.parse_args(argv)
    if os.path.exists(os.path.join(args.out, f"{args.model}.json")):
        parser.error(f"{os.path.join(args.out, args.model)}.json exists; choose another --out")
    try:
        report = run(args)
    except data.DataError as error:
        parser.error(" ".join(str(error).splitlines()))
    weights, supermask = report["runs"]["weights"], report["runs"]["signed_supermask"]
    print(f"trained weights: test accuracy {100 * weights['test_accuracy'][-1]:.2f}%, "
          f"{weights['trainable_weights']:,} weights trained, {sum(weights['seconds']):.0f} s")
    print(f"signed supermask: test accuracy {100 * supermask['test_accuracy'][-1]:.2f}%, "
          f"{supermask['remaining_weights']:,} of {supermask['masked_weights']:,} weights "
          f"remaining ({supermask['remaining_percent'][-1]:.2f}%), "
          f"{sum(supermask['seconds']):.0f} s")


if __name__ == "__main__":
    main()
