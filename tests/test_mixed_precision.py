"""Masked models under Keras' mixed-precision policies: exact masks, low-precision
compute, loss scaling for float16, and learning on real MNIST like float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import crashed_run, tiny_config, tiny_splits

from ssm_keras import data, layers, models, processor
from ssm_keras.exporting import compact, exporter
from ssm_keras.training import config, trainer
from ssm_keras.transforms import cloning

MIXED = ("mixed_bfloat16", "mixed_float16")


def _fcn(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        return models.build_architecture("fcn", input_shape=(28, 28, 1), num_classes=10,
                                         seed=0, init_factor=3.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("policy", MIXED)
def test_masks_are_exact_and_compute_is_low_precision(policy):
    reference, mixed = _fcn("float32"), _fcn(policy)
    images = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype(np.float32)
    for exact, layer in zip(layers.masked_layers(reference), layers.masked_layers(mixed)):
        assert layer.compute_dtype == keras.DTypePolicy(policy).compute_dtype
        for name in ("kernel_variable", "scores_variable", "threshold_variable"):
            variable = getattr(layer, name)()
            assert variable.dtype == "float32", name
            np.testing.assert_array_equal(variable.numpy(), getattr(exact, name)().numpy())
        np.testing.assert_array_equal(layer.compute_mask_values().numpy(),
                                      exact.compute_mask_values().numpy())
        with tf.GradientTape() as tape:
            # Read as in the layer's `call`: `Layer.__call__` reads variables in
            # the compute dtype of its policy.
            read = keras.layers.Lambda(lambda _, layer=layer: layer.effective_kernel(training=True),
                                       dtype=layer.dtype_policy)
            kernel = read(tf.zeros(1))
            loss = tf.reduce_sum(tf.cast(kernel, tf.float32))
        score_gradient = tape.gradient(loss, layer.scores)
        # W = +-W0 or 0 in the low precision: the frozen kernel's sign
        # pattern times the mask, exactly.
        assert kernel.dtype == layer.compute_dtype
        np.testing.assert_array_equal(np.sign(tf.cast(kernel, tf.float32).numpy()),
                                      np.sign(exact.effective_kernel().numpy()))
        assert score_gradient.dtype == tf.float32
        np.testing.assert_array_equal(
            score_gradient.numpy(),
            tf.cast(tf.cast(layer.kernel_variable(), layer.compute_dtype), tf.float32).numpy(),
        )
    outputs = mixed(images)
    assert outputs.dtype == "float32"  # the softmax runs in float32
    np.testing.assert_allclose(outputs.numpy(), reference(images).numpy(), atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("policy, scaled", [("float32", False), ("mixed_bfloat16", False),
                                            ("mixed_float16", True)])
def test_only_float16_scales_the_loss(policy, scaled):
    settings = config.TrainConfig(arch="fcn", mixed_precision=policy)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = trainer.build_model(settings, data.DATASETS["mnist"])
        trainer.compile_model(model, settings, steps_per_epoch=10)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled


@pytest.fixture(scope="module")
def mnist_slice(mnist_dir):
    return data.load_splits("mnist", data_dir=str(mnist_dir.parent), validation_size=0,
                            max_examples=12000)


@pytest.fixture(scope="module")
def float32_accuracy(mnist_slice, tmp_path_factory):
    return _train(mnist_slice, "float32", tmp_path_factory.mktemp("float32"))


def _train(splits, policy, folder):
    settings = config.TrainConfig(
        arch="fcn", dataset="mnist", mask="signed", regime="mask", weight_init="elus",
        learning_rate=0.05, epochs=3, batch_size=128, validation_size=0, seed=0,
        mixed_precision=policy, model_dir=str(folder / "run"),
    )
    return trainer.run(settings, splits=splits)["test_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("policy", MIXED)
def test_masked_fcn_learns_mnist_as_in_float32(policy, mnist_slice, float32_accuracy, tmp_path):
    accuracy = _train(mnist_slice, policy, tmp_path)
    assert float32_accuracy > 0.9 and accuracy > 0.9
    # Training in 16-bit is another trajectory: its accuracy differs from
    # float32's as another seed's does, by more where the processor has no
    # bfloat16 path (Eigen's kernels, other sums). Measured over 6 seeds (3
    # epochs, 12,000 images): the difference had a spread of 0.0018 with AMX
    # and 0.0032 with Eigen's bfloat16 kernels, at most 0.0056. 0.01 is about
    # 3 spreads of the worst, while a broken mixed-precision path (scores
    # frozen in bfloat16, a lost step) costs whole points.
    assert abs(accuracy - float32_accuracy) <= 0.01, (accuracy, float32_accuracy)


def test_a_killed_mixed_float16_run_resumes_bit_identical(tmp_path):
    """The checkpoint is loaded under the run's policy: loaded under float32,
    a `mixed_float16` model gets a plain SGD without its momentum, step count
    and loss scale (Keras skips the saved `LossScaleOptimizer` variables)."""
    splits = tiny_splits()
    settings = dict(mixed_precision="mixed_float16", epochs=2, momentum=0.9)
    trainer.run(tiny_config(tmp_path / "a", **settings), splits=splits)
    resumed = tiny_config(tmp_path / "b", **settings)
    crashed_run(resumed, splits, after_epoch=1)
    trainer.run(resumed, splits=splits)
    straight, again = (keras.saving.load_model(tmp_path / name / "run" / "model.keras",
                                               compile=False) for name in "ab")
    for variable, value in zip(straight.weights, again.get_weights(), strict=True):
        np.testing.assert_array_equal(value, variable.numpy(), err_msg=variable.path)


@pytest.mark.parametrize("policy", MIXED)
def test_exports_compute_in_float32(policy, tmp_path):
    reference, mixed = _fcn("float32"), _fcn(policy)
    assert cloning.in_float32(reference) is reference
    copy = cloning.in_float32(mixed)
    assert {layer.dtype_policy.name for layer in cloning.leaf_layers(copy)} == {"float32"}
    images = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(copy(images).numpy(), reference(images).numpy())
    compact.save_compact(mixed, tmp_path / "mixed.ssm")
    exporter.export_compact(str(tmp_path / "mixed.ssm"), str(tmp_path / "out"),
                             names=("keras", "compact"))
    for path in ("out/model.keras", "out/model.ssm"):
        loaded = (keras.saving.load_model(tmp_path / path) if path.endswith(".keras")
                  else compact.load_compact(tmp_path / path).masked_model)
        assert {layer.dtype_policy.name for layer in cloning.leaf_layers(loaded)} == {"float32"}
        np.testing.assert_allclose(loaded(images).numpy(), reference(images).numpy(),
                                   rtol=1e-5, atol=1e-6)


# /proc/cpuinfo's first entry of three processors (their feature lists cut to what matters).
ZEN3 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n" \
       "flags\t\t: fpu sse2 avx fma avx2 sha_ni vaes\n\n"
ZEN4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n" \
       "flags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_vnni\n\n"
SAPPHIRE_RAPIDS = "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n" \
                  "model name\t: Intel(R) Xeon(R)\nflags\t\t: avx2 avx512f avx512_bf16 " \
                  "avx512_fp16 amx_bf16 amx_tile amx_int8\n\n"
ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd bf16 i8mm\n\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Makes `processor` read the /proc/cpuinfo text passed to the returned function."""
    def use(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(processor, "CPUINFO", str(path))
    return use


@pytest.mark.parametrize("text, bfloat16, float16", [
    (ZEN3, ("avx512_bf16", "amx_bf16"), ("avx512_fp16", "amx_fp16")),
    (ZEN4, (), ("avx512_fp16", "amx_fp16")),
    (SAPPHIRE_RAPIDS, (), ()),
    (ARM, (), ()),  # no x86 features: not known, so nothing is missing
    ("", (), ()),
])
def test_missing_fast_paths_follow_the_processors_features(cpuinfo, text, bfloat16, float16):
    cpuinfo(text)
    assert processor.missing_fast_path("mixed_bfloat16") == bfloat16
    assert processor.missing_fast_path("mixed_float16") == float16
    assert processor.missing_fast_path("float32") == ()


def test_a_missing_file_knows_no_processor(monkeypatch, tmp_path):
    monkeypatch.setattr(processor, "CPUINFO", str(tmp_path / "absent"))
    assert processor.missing_fast_path("mixed_bfloat16") == ()
    assert processor.cpu_info()["cpu_flags"] == []


def test_training_warns_of_a_precision_without_a_fast_path(cpuinfo, caplog):
    strategy = tf.distribute.get_strategy()
    warnings = {}
    for name, text in (("zen3", ZEN3), ("zen4", ZEN4)):
        cpuinfo(text)
        for policy in ("float32", *MIXED):
            caplog.clear()
            settings = config.TrainConfig(arch="fcn", dataset="mnist", mixed_precision=policy)
            trainer.speed_settings_for(settings, strategy)
            warnings[name, policy] = [record.getMessage() for record in caplog.records
                                      if "has no fast path" in record.getMessage()]
    assert warnings["zen3", "mixed_bfloat16"] == [
        "--mixed_precision=mixed_bfloat16 has no fast path on this processor, AMD EPYC (family "
        "25, model 1), which has no avx512_bf16 or amx_bf16: training can be many times slower "
        "than in float32 (18 times for Conv8 on an AVX2-only AMD Zen 3). Leave "
        "--mixed_precision out to train in float32."]
    assert "which has no avx512_fp16 or amx_fp16" in warnings["zen3", "mixed_float16"][0]
    assert "which has no avx512_fp16 or amx_fp16" in warnings["zen4", "mixed_float16"][0]
    assert not any(warnings[name, policy] for name, policy in (
        ("zen3", "float32"), ("zen4", "float32"), ("zen4", "mixed_bfloat16")))
