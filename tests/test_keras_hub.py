"""keras_hub backbones as supermasks: a tiny BertBackbone and ViTBackbone
with random weights (nothing downloaded), their Dense, EinsumDense,
attention, Embedding and Conv2D layers masked down to those inside
keras_hub's composite layers (TransformerEncoder, ViTEncoder,
ViTEncoderBlock, MLP, ViTPatchingAndEmbedding)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssm_keras
from ssm_keras import layers
from ssm_keras.transforms import supermasking

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras_hub is not installed: pip install 'ssm_keras[hub]'")

RNG = np.random.default_rng(0)
# The stock layer types whose kernels a supermask of these backbones masks.
KERNEL_LAYERS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding,
                 keras.layers.Conv2D)


def _bert():
    keras.utils.set_random_seed(1)
    return keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=8, num_segments=2)


def _bert_inputs():
    return {"token_ids": RNG.integers(0, 50, (4, 8)).astype("int32"),
            "segment_ids": RNG.integers(0, 2, (4, 8)).astype("int32"),
            "padding_mask": np.ones((4, 8), "int32")}


def _vit():
    keras.utils.set_random_seed(1)
    return keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 1), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32)


def _vit_inputs():
    return RNG.random((4, 16, 16, 1)).astype("float32")


BACKBONES = {"bert": (_bert, _bert_inputs), "vit": (_vit, _vit_inputs)}


def _stock_kernel_paths(model):
    """The paths of the kernels of every Dense, EinsumDense, Embedding (and
    subclass) and Conv2D layer, at any depth."""
    return {variable.path for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, KERNEL_LAYERS)
            for variable in layer.weights if variable.name in ("kernel", "embeddings")}


def _flat(outputs):
    return [np.asarray(output) for output in keras.tree.flatten(outputs)]


@pytest.fixture(scope="module")
def supermasks():
    """`{name: (stock model, its supermask)}`, made once."""
    return {name: (model, ssm_keras.supermask(model))
            for name, model in ((name, make()) for name, (make, _) in BACKBONES.items())}


@pytest.fixture(params=sorted(BACKBONES))
def case(request, supermasks):
    model, masked = supermasks[request.param]
    return request.param, model, masked, BACKBONES[request.param][1]()


def test_every_kernel_inside_the_composite_layers_is_masked(case):
    name, model, masked, inputs = case
    kernels = layers.masked_kernels(masked)
    assert {layer.kernel_variable(kernel).path for layer, kernel in kernels} == (
        _stock_kernel_paths(model))
    assert len(kernels) == {"bert": 15, "vit": 14}[name]
    rows = {row["layer"]: row for row in supermasking.summary(masked).rows}
    composites = {"bert": ["transformer_layer_0", "transformer_layer_1"],
                  "vit": ["vit_patching_and_embedding", "vit_encoder"]}[name]
    for composite in composites:
        assert rows[composite]["class"] == "MaskedComposite"
        assert rows[composite]["status"] == "masked"
    if name == "bert":  # keras_hub's own position embedding has no kernel: frozen
        assert rows["position_embedding"]["status"] == "frozen"
        scopes = {layer.mask_scope for layer, _ in kernels}
        assert "transformer_layer_1/self_attention_layer/query" in scopes
    else:
        assert rows["vit_encoder"]["masked"] == 2 * (4 * 16 * 16 + 2 * 16 * 32)


def test_only_scores_train_and_one_step_moves_every_score_and_nothing_else(case):
    _, _, masked, inputs = case
    scores = {layer.scores_variable(name).path for layer, name in layers.masked_kernels(masked)}
    assert {variable.path for variable in masked.trainable_variables} == scores
    before = {variable.path: variable.numpy().copy() for variable in masked.weights}
    with tf.GradientTape() as tape:  # a random projection: outputs are layer-normalised
        loss = sum(tf.reduce_sum(output * RNG.normal(size=output.shape).astype("float32"))
                   for output in keras.tree.flatten(masked(inputs, training=True)))
    gradients = tape.gradient(loss, masked.trainable_variables)
    keras.optimizers.SGD(0.5).apply(gradients, masked.trainable_variables)
    moved = {variable.path for variable in masked.weights
             if not np.array_equal(variable.numpy(), before[variable.path])}
    assert moved == scores


def test_bake_gives_stock_layers_with_equal_outputs(case):
    _, _, masked, inputs = case
    baked = ssm_keras.bake(masked)
    classes = {type(layer) for layer in baked._flatten_layers()}
    assert not [cls for cls in classes if cls.__module__.startswith("ssm_keras")]
    for stock, got in zip(_flat(masked(inputs)), _flat(baked(inputs))):
        np.testing.assert_array_equal(got, stock)


def test_compact_files_round_trip_exactly(case, tmp_path):
    _, _, masked, inputs = case
    ssm_keras.save_compact(masked, tmp_path / "backbone.ssm")
    loaded = ssm_keras.load_compact(tmp_path / "backbone.ssm")
    by_scope = {layer.mask_scope: layer for layer in layers.masked_layers(loaded.masked_model)}
    for layer, name in layers.masked_kernels(masked):
        np.testing.assert_array_equal(by_scope[layer.mask_scope].effective_kernel(name),
                                      layer.effective_kernel(name))
    expected = _flat(masked(inputs))
    for model in (loaded.masked_model, loaded.baked_model):
        for stock, got in zip(expected, _flat(model(inputs))):
            np.testing.assert_array_equal(got, stock)


def test_the_supermask_of_a_backbone_is_a_functional_model_with_its_inputs_and_outputs(
        supermasks):
    """clone_model cannot remake keras_hub's backbone classes: the user gets a
    keras.Model with the same inputs and outputs, not a BertBackbone."""
    bert, masked = supermasks["bert"]
    assert type(masked) is not type(bert) and isinstance(masked, keras.Model)
    assert not isinstance(masked, keras_hub.models.Backbone)
    assert not hasattr(masked, "token_embedding")
    assert sorted(masked.input) == sorted(bert.input) == [
        "padding_mask", "segment_ids", "token_ids"]
    assert sorted(masked(_bert_inputs())) == ["pooled_output", "sequence_output"]


def test_a_vit_is_masked_though_keras_cannot_clone_it(supermasks):
    """ViTPatchingAndEmbedding.get_config reports num_patches and
    num_positions, which its constructor refuses: keras.models.clone_model
    fails; the masked composite leaves them out (they are derived)."""
    vit, masked = supermasks["vit"]
    with pytest.raises(TypeError, match="num_patches"):
        keras.models.clone_model(vit)
    config = masked.get_layer("vit_patching_and_embedding").get_config()["layer"]["config"]
    assert "num_patches" not in config and config["patch_size"] == (4, 4)
