"""A user's own Keras CNN three ways, on the same data and schedule.

1. `weights`: the CNN trained normally (the baseline).
2. `signed_supermask`: `ssm_keras.supermask(cnn)`, random signed-constant
   kernels (`elus`, seed 0) frozen, only the signed mask trained.
3. `mask_over_trained`: `ssm_keras.supermask(trained cnn, kernels="keep",
   score_initializer="ones")`, a signed mask learned over the baseline's
   trained kernels, starting from all of them kept (every score 1, so
   `tau = 0.4` and the masked model starts as the trained one).

The CNN is written here as a user would write it (it is not in the model
registry): Rescaling, two conv-BN-ReLU-pool stages (32 and 64 channels),
Dense 128, Dense 10. Every run uses the same training split (the
validation split held out), batch size, epochs and seed; the masks train
with Adam and the paper's weight decay on the scores only
(`ssm_keras.decay_scores_only`). Writes `--out/results.json` and
`--out/results.md`:

    python examples/your_own_model.py --data_dir=../shared/data --out=own_model
"""

import argparse
import json
import os
import time

import keras

import ssm_keras
from ssm_keras import data
from ssm_keras.training import statistics


def user_cnn(input_shape, num_classes, seed):
    """The user's CNN: a plain functional Keras model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for channels in (32, 64):
        x = keras.layers.Conv2D(channels, 3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="user_cnn")


def train(model, splits, args, masked):
    """Compiles and fits `model`; returns its record (accuracies, weights)."""
    if masked:
        optimizer = ssm_keras.decay_scores_only(
            keras.optimizers.Adam(args.mask_learning_rate), model, args.score_weight_decay)
        callbacks = [ssm_keras.MaskMonitor(None)]
    else:
        optimizer = keras.optimizers.Adam(args.learning_rate)
        callbacks = []
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.time()
    history = model.fit(*splits.train, validation_data=splits.validation,
                        epochs=args.epochs, batch_size=args.batch_size,
                        callbacks=callbacks, verbose=2)
    seconds = time.time() - start
    _, test_accuracy = model.evaluate(*splits.test, batch_size=512, verbose=0)
    summary = statistics.summarize(model)
    return {
        "test_accuracy": test_accuracy,
        "validation_accuracy": history.history["val_accuracy"],
        "remaining_weights": summary["remaining_weights"],
        "masked_weights": summary["masked_weights"],
        "remaining_percent": summary["remaining_percent"],
        "train_seconds": seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "cifar10"))
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam, weights")
    parser.add_argument("--mask_learning_rate", type=float, default=0.003, help="Adam, scores")
    parser.add_argument("--score_weight_decay", type=float, default=5e-4,
                        help="the paper's weight decay on the scores")
    parser.add_argument("--init_factor", type=float, default=3.0, help="elus factor")
    parser.add_argument("--keep_score_initializer", default="ones",
                        help="score initialiser of the mask over the trained kernels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_examples", type=int, default=None)
    args = parser.parse_args()
    results_path = os.path.join(args.out, "results.json")
    if os.path.exists(results_path):
        parser.error(f"{results_path} exists; choose another --out")
    try:
        splits = data.load_splits(args.dataset, data_dir=args.data_dir, seed=args.seed,
                                  max_examples=args.max_examples)
    except data.DataError as error:
        parser.error(" ".join(str(error).splitlines()))
    os.makedirs(args.out, exist_ok=True)
    shape, classes = splits.spec.image_shape, splits.spec.num_classes
    runs = {}
    baseline = user_cnn(shape, classes, args.seed)
    runs["weights"] = train(baseline, splits, args, masked=False)
    signed = ssm_keras.supermask(user_cnn(shape, classes, args.seed), "signed",
                                 init_factor=args.init_factor, seed=args.seed)
    runs["signed_supermask"] = train(signed, splits, args, masked=True)
    over_trained = ssm_keras.supermask(baseline, "signed", kernels="keep", seed=args.seed,
                                       score_initializer=args.keep_score_initializer)
    runs["mask_over_trained"] = train(over_trained, splits, args, masked=True)
    report = {"settings": vars(args), "data": splits.spec.name,
              "train_examples": int(len(splits.train[1])), "runs": runs}
    with open(results_path, "w") as file:
        json.dump(report, file, indent=1)
    lines = ["| run | test accuracy | remaining weights | train seconds |",
             "| --- | ---: | ---: | ---: |"]
    for name, run in runs.items():
        lines.append(f"| {name} | {100 * run['test_accuracy']:.2f}% | "
                     f"{run['remaining_weights']:,} of {run['masked_weights']:,} "
                     f"({run['remaining_percent']:.2f}%) | {run['train_seconds']:.0f} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as file:
        file.write(table)
    print(table)


if __name__ == "__main__":
    main()
