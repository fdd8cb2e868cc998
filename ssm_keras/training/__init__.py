"""A training run: its settings (`config`), the job (`trainer`), its
callbacks, run folder, sparsity controller, score decay and the rest it
needs."""
