"""The Keras model: sizes, configurability, serialisation, and the float32 step table."""
import keras
import numpy as np
import pytest

from diffwave_vocoder import DiffWaveConfig, build_model
from diffwave_vocoder.features.mel import MelConvention
from diffwave_vocoder.model import step_embedding_table


def test_default_sizes_match_the_reference():
    # Reference state_dict totals (spec §1): 2,619,971 conditional, 2,308,737 unconditional.
    assert build_model(DiffWaveConfig()).count_params() == 2_619_971
    assert build_model(DiffWaveConfig(unconditional=True)).count_params() == 2_308_737


def test_step_table_equals_torch_float32_build():
    from diffwave.model import DiffusionEmbedding

    for steps in (50, 200):
        reference = DiffusionEmbedding(steps).embedding.numpy()
        assert np.abs(step_embedding_table(steps) - reference).max() <= 1e-7


def test_configurable_sizes_and_hop(small_config):
    config = small_config.replace(mel=MelConvention(hop_length=300, n_mels=64), upsample_factors=(15, 20))
    model = build_model(config)
    mel = np.random.default_rng(0).uniform(0, 1, (2, 5, 64)).astype(np.float32)
    audio = np.zeros((2, 5 * 300), np.float32)
    out = model([audio, np.array([3.0, 7.5], np.float32), mel])
    assert out.shape == (2, 1500)


def test_fresh_model_outputs_the_output_bias_like_the_reference(small_config):
    # The output projection's kernel is zero-initialised, so the prediction is its bias everywhere.
    model = build_model(small_config)
    out = model([np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32),
                 np.array([4.0], np.float32), np.zeros((1, 2, 80), np.float32)]).numpy()
    assert np.allclose(out, model.get_layer("output_projection").bias.numpy()[0])


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="upsample_factors"):
        DiffWaveConfig(mel=MelConvention(hop_length=256), upsample_factors=(16, 8))
    with pytest.raises(ValueError, match="residual_layers"):
        DiffWaveConfig(residual_layers=0)
    with pytest.raises(ValueError, match="unknown config field"):
        DiffWaveConfig.from_dict({"residual_chanels": 64})


def test_config_json_round_trip(small_config):
    assert DiffWaveConfig.from_json(small_config.to_json()) == small_config


def test_keras_save_and_reload_without_custom_objects(tmp_path, small_vocoder):
    model = small_vocoder.model
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # custom layers are registered by importing the package
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(1, 768)).astype(np.float32), np.array([2.5], np.float32),
              rng.uniform(0, 1, (1, 3, 80)).astype(np.float32)]
    assert np.array_equal(model(inputs).numpy(), reloaded(inputs).numpy())


def test_layer_configs_round_trip():
    from diffwave_vocoder.model import DilatedConv1D, DiffusionEmbedding, ResidualBlock, SpectrogramUpsampler

    for layer in (DiffusionEmbedding(20), SpectrogramUpsampler((8, 32)), DilatedConv1D(8, 4),
                  ResidualBlock(8, 2, conditional=False)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_non_integer_steps_interpolate_the_embedding(small_config):
    embedding = build_model(small_config).get_layer("diffusion_embedding")
    low, high, mid = (embedding(np.array([t], np.float32)).numpy() for t in (3.0, 4.0, 3.25))
    # silu(W2 silu(W1 x)) is not linear, so compare the interpolated table rows instead.
    table = step_embedding_table(50)
    x = table[3] + (table[4] - table[3]) * 0.25
    manual = keras.ops.silu(embedding.projection2(keras.ops.silu(embedding.projection1(x[None])))).numpy()
    assert np.allclose(mid, manual, atol=1e-6)
    assert not np.allclose(mid, low) and not np.allclose(mid, high)


def test_training_path_dilated_conv_equals_inference_path(small_vocoder):
    # Training calls run oneDNN's native dilated convolution (the GEMM form without oneDNN), inference
    # the single-GEMM form.
    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(2, 1024)).astype(np.float32), np.array([3.0, 41.0], np.float32),
              rng.uniform(0, 1, (2, 4, 80)).astype(np.float32)]
    model = small_vocoder.model
    trained, inferred = model(inputs, training=True).numpy(), model(inputs, training=False).numpy()
    assert np.abs(inferred).max() > 0.01
    assert np.abs(trained - inferred).max() <= 1e-5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dilated_conv_trains_in_half_precision_on_this_device(dtype):
    # oneDNN has no float16 dilated-conv gradient on most CPUs; the layer then trains through the GEMM form.
    import tensorflow as tf

    from diffwave_vocoder.model import DilatedConv1D

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 64, 8)).astype(np.float32)
    full = DilatedConv1D(6, dilation_rate=4)
    full.build(x.shape)
    mixed = DilatedConv1D(6, dilation_rate=4, dtype=f"mixed_{dtype}")
    mixed.build(x.shape)
    mixed.set_weights(full.get_weights())

    def gradient(layer):
        with tf.GradientTape() as tape:
            output = layer(tf.constant(x), training=True)
            loss = tf.reduce_sum(tf.cast(output, tf.float32) ** 2)
        assert output.dtype == layer.compute_dtype
        return tape.gradient(loss, layer.kernel).numpy()

    reference, half = gradient(full), gradient(mixed)
    assert np.isfinite(half).all()
    assert np.abs(half - reference).max() <= 0.02 * np.abs(reference).max()


@pytest.mark.parametrize("config", [
    DiffWaveConfig(residual_channels=4, residual_layers=2, dilation_cycle_length=2),
    DiffWaveConfig(residual_channels=8, residual_layers=3, dilation_cycle_length=3, unconditional=True),
    DiffWaveConfig(residual_channels=4, residual_layers=2, upsample_factors=(8, 4),
                   mel=DiffWaveConfig().mel.replace(hop_length=32, n_mels=40)),
], ids=["conditional", "unconditional", "hop-32-40-mels"])
def test_weight_shapes_known_without_tensorflow_are_the_models(config):
    from diffwave_vocoder.vocoder_format import expected_weight_shapes

    assert expected_weight_shapes(config) == {w.path: tuple(w.shape) for w in build_model(config).weights}
