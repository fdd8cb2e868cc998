"""The route for subclassed models (docs/your-own-model.md, "Subclassed
models: use the masked layers directly"): the documented `Classifier`,
trained with `fit`, `decay_scores_only` and `MaskMonitor`, then baked and
stored through a functional model of its layers."""

import keras
import numpy as np

import ssm_keras
from ssm_keras import layers


class Classifier(keras.Model):
    """As in docs/your-own-model.md."""

    def __init__(self):
        super().__init__()
        self.embed = ssm_keras.layers.MaskedEmbedding(10_000, 64, mask_seed=0)
        self.encode = ssm_keras.layers.MaskedLSTM(64, mask_seed=0)
        self.head = ssm_keras.MaskedDense(2, mask_seed=0)

    def call(self, tokens):
        return self.head(self.encode(self.embed(tokens)))


def test_a_subclassed_model_of_masked_layers_trains_scores_only_bakes_and_compacts(tmp_path):
    rng = np.random.default_rng(0)
    tokens, labels = rng.integers(0, 10_000, (32, 6)).astype("int32"), rng.integers(0, 2, 32)
    model = Classifier()
    model(tokens[:1])  # builds the layers before decay_scores_only looks for the scores
    kernels = layers.masked_kernels(model)
    assert [(layer.mask_scope, name) for layer, name in kernels] == [
        ("masked_embedding", "embeddings"), ("masked_lstm/lstm_cell", "kernel"),
        ("masked_lstm/lstm_cell", "recurrent_kernel"), ("masked_dense", "kernel")]
    scores = {layer.scores_variable(name).path for layer, name in kernels}
    assert {variable.path for variable in model.trainable_variables} == scores
    before = {variable.path: variable.numpy().copy() for variable in model.weights}
    optimizer = ssm_keras.decay_scores_only(keras.optimizers.Adam(0.01), model, 5e-4)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(tokens, labels, epochs=1, batch_size=16, verbose=0,
                        callbacks=[ssm_keras.MaskMonitor(None)])
    assert 0 < history.history["remaining_percent"][0] < 100
    moved = {variable.path for variable in model.weights
             if not np.array_equal(variable.numpy(), before[variable.path])}
    assert moved == scores

    # bake and save_compact take a functional model of the same layers.
    inputs = keras.Input((None,), dtype="int32")
    functional = keras.Model(inputs, model.head(model.encode(model.embed(inputs))))
    expected = np.asarray(model(tokens))
    np.testing.assert_array_equal(np.asarray(functional(tokens)), expected)
    baked = ssm_keras.bake(functional)
    assert [type(layer).__name__ for layer in baked.layers[1:]] == ["Embedding", "LSTM", "Dense"]
    np.testing.assert_array_equal(np.asarray(baked(tokens)), expected)
    ssm_keras.save_compact(functional, tmp_path / "classifier.ssm")
    loaded = ssm_keras.load_compact(tmp_path / "classifier.ssm")
    np.testing.assert_array_equal(np.asarray(loaded.masked_model(tokens)), expected)
