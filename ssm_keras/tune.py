"""`python -m ssm_keras.tune`: the `ssm-tune` command (`ssm_keras.cli.tune`)."""

from ssm_keras.cli import tune

if __name__ == "__main__":
    tune.cli()
