"""The `ssm-evaluate` command: the test accuracy of a pretrained model or a run.

    ssm-evaluate --pretrained=fcn_mnist_signed_seed0 --data_dir=../shared/data
    ssm-evaluate --model_dir=runs/fcn_mnist_signed --data_dir=../shared/data

evaluates the model on the full test split of the data set it was trained
on (`--dataset` may name it, and must then be that one;
`ssm_keras.experiments.evaluation`)
and prints the accuracy next to the one its run recorded.
"""

from absl import flags, logging

from ssm_keras.cli import shell
from ssm_keras.experiments import config


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
    """Defines one flag per `EvaluateSettings` field in `flag_values`."""
    shell.define_flags(config.EvaluateSettings, flag_values)
    flags.adopt_module_key_flags(config, flag_values)


def run_command(flag_values):
    """Evaluates what the parsed flags name and prints one line."""
    from ssm_keras.experiments import evaluation

    logging.set_verbosity(logging.WARNING)
    result = evaluation.evaluate_settings(shell.from_flags(config.EvaluateSettings, flag_values))
    print(summary_line(result))
    evaluation.check_recorded(result)


def cli():
    """The `ssm-evaluate` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
