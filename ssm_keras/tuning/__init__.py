"""Hyperparameter search over a run's settings with Keras Tuner
(`searching`); the settings of a search (`config`)."""
