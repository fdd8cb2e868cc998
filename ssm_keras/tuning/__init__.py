"""Hyperparameter search over a run's settings with Keras Tuner
(`searching`)."""
