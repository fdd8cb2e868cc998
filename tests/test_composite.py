"""Composite layers (a user's layer holding Dense, attention and recurrent
layers) masked inside, `ReversibleEmbedding`, subclasses that only rename a
stock layer, and the one-line refusals of what cannot be masked inside."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssm_keras
from ssm_keras import layers
from ssm_keras.layers import registry

L = keras.layers
RNG = np.random.default_rng(0)


@keras.saving.register_keras_serializable(package="test_composite")
class Block(L.Layer):
    """A user's composite layer: attention, a norm, a list of Dense layers
    and (`recurrent`) an LSTM, made in `build`; a weight of its own."""

    def __init__(self, units, recurrent=True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.recurrent = units, recurrent

    def build(self, input_shape):
        self.attention = L.MultiHeadAttention(2, 4, name="attention")
        self.attention.build(input_shape, input_shape)
        self.norm = L.LayerNormalization(name="norm")
        self.norm.build(input_shape)
        self.denses = [L.Dense(self.units, activation="relu", name="dense_in"),
                       L.Dense(input_shape[-1], name="dense_out")]
        self.denses[0].build(input_shape)
        self.denses[1].build((*input_shape[:-1], self.units))
        if self.recurrent:
            self.lstm = L.LSTM(self.units, return_sequences=True, name="lstm")
            self.lstm.build(input_shape)
        self.offset = self.add_weight(name="offset", shape=(self.units,), initializer="ones")

    def call(self, inputs):
        x = self.norm(inputs + self.attention(inputs, inputs))
        x = self.denses[1](self.denses[0](x))
        return (self.lstm(x) if self.recurrent else x) + self.offset

    def get_config(self):
        return {**super().get_config(), "units": self.units, "recurrent": self.recurrent}


def _block_model(blocks=("block",), recurrent=False):
    tokens = keras.Input((5,), dtype="int32")
    x = L.Embedding(20, 8, name="embedding")(tokens)
    for name in blocks:
        x = Block(8, recurrent=recurrent, name=name)(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, L.Dense(3, name="head")(x))


def _tokens():
    return RNG.integers(0, 20, (4, 5)).astype("int32")


def test_a_composite_layer_is_masked_inside_and_trains_bakes_saves_and_compacts(tmp_path):
    model, tokens = _block_model(), _tokens()
    masked = ssm_keras.supermask(model, kernels="keep", seed=0)
    block = masked.get_layer("block")
    assert isinstance(block, layers.MaskedComposite) and isinstance(block.layer, Block)
    assert [leaf.mask_scope for leaf in block.masked_sublayers] == [
        "block/attention/query", "block/attention/key", "block/attention/value",
        "block/attention/attention_output", "block/dense_in", "block/dense_out"]
    assert isinstance(block.layer.denses[0], layers.MaskedDense)  # in the list, in place
    # kernels="keep": W0 is the stock kernel, at the stock path.
    stock = {variable.path: variable for variable in model.weights}
    for layer, name in layers.masked_kernels(masked):
        kernel = layer.kernel_variable(name)
        np.testing.assert_array_equal(kernel.numpy(), stock[kernel.path].numpy())
    # Only the scores train (not the norm, the offset, the biases); one step moves them all.
    scores = {layer.scores_variable(name).path for layer, name in layers.masked_kernels(masked)}
    assert {variable.path for variable in masked.trainable_variables} == scores
    before = {variable.path: variable.numpy().copy() for variable in masked.weights}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(masked(tokens, training=True) * RNG.normal(size=(4, 3)))
    keras.optimizers.SGD(0.5).apply(tape.gradient(loss, masked.trainable_variables),
                                    masked.trainable_variables)
    assert {variable.path for variable in masked.weights
            if not np.array_equal(variable.numpy(), before[variable.path])} == scores

    expected = np.asarray(masked(tokens))
    baked = ssm_keras.bake(masked)
    assert type(baked.get_layer("block")) is Block
    assert isinstance(baked.get_layer("block").denses[0], L.Dense)
    np.testing.assert_array_equal(np.asarray(baked(tokens)), expected)
    ssm_keras.save_compact(masked, tmp_path / "block.ssm")
    loaded = ssm_keras.load_compact(tmp_path / "block.ssm")
    np.testing.assert_array_equal(np.asarray(loaded.masked_model(tokens)), expected)
    np.testing.assert_array_equal(np.asarray(loaded.baked_model(tokens)), expected)


@pytest.mark.slow
def test_a_masked_composite_saves_with_keras_and_changes_regime(tmp_path):
    masked, tokens = ssm_keras.supermask(_block_model(recurrent=True), seed=0), _tokens()
    assert masked.get_layer("block").layer.lstm.cell.mask_scope == "block/lstm/lstm_cell"
    expected = np.asarray(masked(tokens))
    json.dumps(keras.saving.serialize_keras_object(masked.get_layer("block")))
    masked.save(tmp_path / "block.keras")
    reloaded = keras.saving.load_model(tmp_path / "block.keras")
    np.testing.assert_array_equal(np.asarray(reloaded(tokens)), expected)
    tuned = ssm_keras.with_regime(masked, "mask_then_weights")
    np.testing.assert_array_equal(np.asarray(tuned(tokens)), expected)
    assert {variable.path for variable in tuned.trainable_variables} == {
        layer.kernel_variable(name).path for layer, name in layers.masked_kernels(tuned)}


@pytest.mark.slow
def test_redrawn_kernels_are_seeded_by_their_path_inside_the_composite():
    first, second = (ssm_keras.supermask(_block_model(("one", "two")), seed=4)
                     for _ in range(2))
    kernels = [{layer.mask_scope: layer.kernel_variable(name).numpy()
                for layer, name in layers.masked_kernels(model)} for model in (first, second)]
    assert kernels[0].keys() == kernels[1].keys()
    for scope, kernel in kernels[0].items():
        np.testing.assert_array_equal(kernels[1][scope], kernel)
    for scope in ("attention/query", "dense_out"):
        assert not np.array_equal(kernels[0][f"one/{scope}"], kernels[0][f"two/{scope}"])


class _Kernel(L.Layer):
    """A layer with a kernel, of no registered type."""

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 2))

    def call(self, inputs):
        return inputs @ self.kernel


class _Holder(L.Layer):
    """A composite whose sublayer `inner()` makes."""

    def __init__(self, inner=None, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def build(self, input_shape):
        self.parts = self.inner()
        for part in self._parts():
            part.build(input_shape)

    def _parts(self):
        parts = self.parts if isinstance(self.parts, (list, tuple)) else [self.parts]
        return [layer for part in parts
                for layer in (part if isinstance(part, (list, tuple)) else [part])]

    def call(self, inputs):
        return sum(part(inputs) for part in self._parts())


def _holding(inner):
    inputs = keras.Input((4, 3))
    holder = _Holder(name="holder")
    holder.inner = inner
    return keras.Model(inputs, holder(inputs))


class _Paired(keras.layers.Layer):
    """Holds its sublayer in an attribute and, for its call, in a tuple."""

    def build(self, input_shape):
        self.dense = L.Dense(2, name="dense")
        self.pair = (self.dense,)
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.pair[0](inputs)


def test_a_sublayer_also_held_in_a_tuple_is_refused():
    inputs = keras.Input((4, 3))
    with pytest.raises(ValueError, match="its sublayer 'dense' is held in a tuple or a nested "
                                         "container"):
        ssm_keras.supermask(keras.Model(inputs, _Paired(name="paired")(inputs)))


@pytest.mark.parametrize("inner, message", [
    (lambda: [L.Dense(2, name="dense"), _Kernel(name="own")],
     "cannot supermask layer 'holder': its sublayer 'own' has a kernel and its type "
     "_Kernel has no masked counterpart (maskable: Dense, "),
    (lambda: (L.Dense(2, name="a"), L.Dense(2, name="b")),
     "cannot supermask layer 'holder': its sublayer 'a' is held in a tuple or a nested "
     "container, where no masked layer can take its place; pass layers= to leave the layer as "
     "it is, or hold it only in attributes, lists or dicts."),
    (lambda: [[L.Dense(2, name="deep")]],
     "cannot supermask layer 'holder': its sublayer 'deep' is held in a tuple or a nested "
     "container"),
    (lambda: keras.Sequential([L.Dense(2)], name="seq"),
     "cannot supermask layer 'holder': its sublayer 'seq' is a model (Sequential), inside "
     "which supermask does not mask; pass layers= to leave the layer as it is, or build it "
     "with the masked layers (ssm_keras.layers)."),
    (lambda: L.Dense(2, kernel_regularizer="l2", name="regularized"),
     "cannot supermask layer 'holder': its sublayer 'regularized': it has a kernel "
     "regularizer"),
])
def test_what_cannot_be_masked_inside_a_composite_is_refused_in_one_line(inner, message):
    with pytest.raises(ValueError) as error:
        ssm_keras.supermask(_holding(inner))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@keras.saving.register_keras_serializable(package="test_composite")
class _Residual(L.Layer):
    """`x + dense(dropout(x))`; the Dense is named `dense_name` (None: Keras
    makes one up), the Dropout never."""

    def __init__(self, dense_name=None, **kwargs):
        super().__init__(**kwargs)
        self.dense_name = dense_name

    def build(self, input_shape):
        self.dropout = L.Dropout(0.5)
        self.dense = L.Dense(input_shape[-1], name=self.dense_name)
        self.dense.build(input_shape)

    def call(self, inputs):
        return inputs + self.dense(self.dropout(inputs))

    def get_config(self):
        return {**super().get_config(), "dense_name": self.dense_name}


def test_a_sublayer_with_weights_needs_a_name_a_copy_keeps():
    inputs = keras.Input((6,))
    made_up = keras.Model(inputs, _Residual(name="block")(inputs))
    with pytest.raises(ValueError) as error:
        ssm_keras.supermask(made_up)
    assert str(error.value).startswith("cannot supermask layer 'block': its sublayer 'dense")
    assert str(error.value).endswith("; name the sublayers it makes (e.g. "
                                     'keras.layers.Dense(..., name="inner")).')
    named = keras.Model(inputs, _Residual("inner", name="block")(inputs))  # the Dropout: no weights
    masked = ssm_keras.supermask(named, kernels="keep", score_initializer="ones")
    values = RNG.normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(masked(values), named(values), rtol=1e-6, atol=1e-6)


def test_reversible_embeddings_tied_and_untied_are_masked_both_ways(tmp_path):
    tokens = keras.Input((5,), dtype="int32")
    tied = L.ReversibleEmbedding(20, 8, name="tied")
    untied = L.ReversibleEmbedding(20, 8, tie_weights=False, name="untied")
    logits = tied(tied(tokens), reverse=True) + untied(untied(tokens), reverse=True)
    model = keras.Model(tokens, logits)
    masked = ssm_keras.supermask(model, seed=0)
    assert [(layer.name, name) for layer, name in layers.masked_kernels(masked)] == [
        ("tied", "embeddings"), ("untied", "embeddings"), ("untied", "reverse_embeddings")]
    assert sorted(variable.name for variable in masked.trainable_variables) == [
        "embeddings_scores", "embeddings_scores", "reverse_embeddings_scores"]
    inputs = _tokens()
    expected = np.asarray(masked(inputs))
    baked = ssm_keras.bake(masked)
    assert type(baked.get_layer("untied")) is L.ReversibleEmbedding
    np.testing.assert_array_equal(np.asarray(baked(inputs)), expected)
    ssm_keras.save_compact(masked, tmp_path / "embeddings.ssm")
    loaded = ssm_keras.load_compact(tmp_path / "embeddings.ssm")
    np.testing.assert_array_equal(np.asarray(loaded.masked_model(inputs)), expected)


class _RenamedDense(L.Dense):
    """Keras' Dense under another name."""


class _ScaledDense(L.Dense):
    def call(self, inputs):
        return 2 * super().call(inputs)


def test_a_subclass_that_only_renames_a_stock_layer_is_masked_as_it():
    assert registry.masked_type(_RenamedDense) is layers.MaskedDense
    assert registry.masked_type(_ScaledDense) is None
    inputs = keras.Input((3,))
    model = keras.Model(inputs, _RenamedDense(2, name="renamed")(inputs))
    masked = ssm_keras.supermask(model)
    assert type(masked.get_layer("renamed")) is layers.MaskedDense
    assert type(ssm_keras.bake(masked).get_layer("renamed")) is L.Dense


@keras.saving.register_keras_serializable(package="test_composite")
class KwargsBlock(L.Layer):
    """A composite whose `__init__` takes only `**kw` (not named `kwargs`):
    Keras leaves its name out of `get_config()`."""

    def __init__(self, **kw):
        super().__init__(**kw)

    def build(self, input_shape):
        self.dense = L.Dense(4, activation="relu", name="inner_dense")
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.dense(inputs)


def test_a_composite_whose_config_has_no_name_keeps_it_through_every_copy(tmp_path):
    block = KwargsBlock(name="block")
    assert "name" not in block.get_config()
    model = keras.Sequential([keras.Input((6,)), block, L.Dense(2, name="head")])
    masked = ssm_keras.supermask(model, seed=0)
    assert masked.get_layer("block").layer.name == "block"
    inputs = RNG.normal(size=(3, 6)).astype("float32")
    expected = np.asarray(masked(inputs))
    tuned = ssm_keras.with_regime(masked, "mask_then_weights")  # copies variables by key
    np.testing.assert_array_equal(np.asarray(tuned(inputs)), expected)
    path = str(tmp_path / "block.ssm")
    ssm_keras.save_compact(masked, path)
    np.testing.assert_array_equal(np.asarray(ssm_keras.load_compact(path).masked_model(inputs)),
                                  expected)
