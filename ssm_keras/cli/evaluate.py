"""The `ssm-evaluate` command: the test accuracy of a pretrained model or a run.

    python -m ssm_keras.evaluate --pretrained=fcn_mnist_signed_seed0 --data_dir=../shared/data
    python -m ssm_keras.evaluate --model_dir=runs/fcn_mnist_signed --data_dir=../shared/data

evaluates the model on the full test split of the data set it was trained
on (`--dataset` may name it, and must then be that one; `ssm_keras.evaluation`)
and prints the accuracy next to the one its run recorded.
"""

from absl import flags
from absl import logging

from ssm_keras import command, evaluation
from ssm_keras.data import specs


def summary_line(result):
    """`name: test accuracy ...% (correct of total ...); recorded ...%`, the
    recorded figure followed by `(on N test images)` when it was measured on
    another number of images than this evaluation (a `--max_examples` run)."""
    recorded = result["recorded_test_accuracy"]
    recorded_images = result.get("recorded_test_images")
    if recorded is None:
        recorded_text = "none recorded"
    elif recorded_images is not None and recorded_images != result["total"]:
        recorded_text = f"recorded {100 * recorded:.2f}% (on {recorded_images:,} test images)"
    else:
        recorded_text = f"recorded {100 * recorded:.2f}%"
    return (f"{result['name']}: test accuracy {100 * result['test_accuracy']:.2f}% "
            f"({result['correct']:,} of {result['total']:,} {result['dataset']} test images); "
            + recorded_text)


def define_flags(flag_values=flags.FLAGS):
    """Defines the command's flags in `flag_values`."""
    flags.DEFINE_string("pretrained", None,
                        "Name of a shipped pretrained model (ssm_keras.pretrained.names()).",
                        flag_values=flag_values)
    flags.DEFINE_string("model_dir", None, "Finished training run directory.",
                        flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "Local copy of the data sets.", flag_values=flag_values)
    flags.DEFINE_string("dataset", None,
                        f"Data set to evaluate on: {', '.join(specs.DATASETS)} (default: the "
                        "one the model was trained on).",
                        flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 128, "Images per batch.", lower_bound=1,
                         flag_values=flag_values)
    flags.mark_flags_as_mutual_exclusive(["pretrained", "model_dir"], required=True,
                                         flag_values=flag_values)


def run_command(flag_values):
    """Evaluates what the parsed flags name and prints one line."""
    logging.set_verbosity(logging.WARNING)
    result = evaluation.evaluate(flag_values.pretrained, flag_values.model_dir,
                                 flag_values.data_dir, flag_values.dataset,
                                 flag_values.batch_size)
    print(summary_line(result))


def cli():
    """The `ssm-evaluate` console script."""
    command.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
