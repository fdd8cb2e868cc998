"""`python -m ssm_keras.export`: the `ssm-export` command (`ssm_keras.cli.export`)."""

from ssm_keras.cli import export

if __name__ == "__main__":
    export.cli()
