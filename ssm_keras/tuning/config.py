"""The settings of a hyperparameter search (the `ssm_keras.tune` flags
besides those of `ssm_keras.train`), read without TensorFlow; the search
itself is `searching.run`."""

import dataclasses

from ssm_keras.settings import setting

OBJECTIVES = ("val_accuracy", "sparse")
SPARSE_OBJECTIVE = "val_sparse_objective"


@dataclasses.dataclass
class SearchConfig:
    """The settings of a search; the field names are the `ssm_keras.tune` flags."""

    tuner: str = setting(
        "random",
        "random, bayesian (needs scipy and scikit-learn) or hyperband (max_epochs = "
        "--epochs).")
    max_trials: int = setting(
        10,
        "random, bayesian: the number of trials (a continued search runs the rest).")
    out_dir: str | None = setting(
        None,
        "Required: the folder of the search's project folders.")
    project_name: str | None = setting(
        None,
        "The search's folder in --out_dir (default: "
        "<arch>-<mask>-<dataset>-seed<seed>-<tuner>).")
    objective: str = setting(
        "val_accuracy",
        "val_accuracy, or sparse: val_accuracy - sparsity_weight * remaining fraction of the "
        "weights. Both on the validation split, at a trial's last epoch.")
    sparsity_weight: float = setting(
        0.1,
        "--objective=sparse: accuracy given up per unit of remaining fraction.")
    learning_rate_range: str = setting(
        "0.01:0.2",
        "LOW:HIGH of --learning_rate (log scale; equal ends fix it).")
    weight_decay_range: str = setting(
        "1e-4:2e-3",
        "LOW:HIGH of --weight_decay (log scale; equal ends fix it).")
    tau_fraction_range: str = setting(
        "0.2:0.6",
        "LOW:HIGH of --tau_fraction, threshold masks (linear; equal ends fix it).")
    density_range: str = setting(
        "0.02:0.5",
        "LOW:HIGH of --density, top-k masks (log scale; equal ends fix it).")
    init_factor_range: str = setting(
        "2:8",
        "LOW:HIGH of --init_factor, elus weights (log scale; equal ends fix it).")
    mask_choices: str | None = setting(
        None,
        "A,B,...: mask kinds to search (--regime=mask; unset: --mask only).")
    optimizer_choices: str | None = setting(
        None,
        "A,B,...: optimizers to search (unset: --optimizer only).")
    lr_schedule_choices: str | None = setting(
        None,
        "A,B,...: learning-rate schedules to search (unset: --lr_schedule only).")
    hyperband_factor: int = setting(
        3,
        "hyperband: the reduction factor of epochs and trials per round.")
    hyperband_iterations: int = setting(
        1,
        "hyperband: how many times to run the whole Hyperband schedule.")

    @property
    def objective_name(self):
        """The metric Keras Tuner maximises."""
        return SPARSE_OBJECTIVE if self.objective == "sparse" else "val_accuracy"

    def validate(self):
        """Raises `searching.TuneError` (a Keras Tuner error, so it loads
        TensorFlow) on the first bad setting."""
        from ssm_keras.tuning.searching import TUNERS, TuneError

        if not self.out_dir:
            raise TuneError(
                "--out_dir is required: the folder that holds the search (its trials, "
                "the state to continue it from, the best flagfile)."
            )
        for name, allowed in (("tuner", tuple(TUNERS)), ("objective", OBJECTIVES)):
            if getattr(self, name) not in allowed:
                raise TuneError(f"Unknown --{name}={getattr(self, name)!r}. "
                                f"Allowed: {', '.join(allowed)}.")
        for name, least in (("max_trials", 1), ("hyperband_factor", 2),
                            ("hyperband_iterations", 1), ("sparsity_weight", 0)):
            if not getattr(self, name) >= least:
                raise TuneError(f"--{name} must be >= {least}. "
                                f"Received: --{name}={getattr(self, name)}")
