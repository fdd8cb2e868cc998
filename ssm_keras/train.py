"""`python -m ssm_keras.train`: the `ssm-train` command (`ssm_keras.cli.train`)."""

from ssm_keras.cli import train

if __name__ == "__main__":
    train.cli()
