"""The chunked (wavefront) network evaluation equals the whole-input Keras model, at any chunk length.

Models here have receptive fields several times longer than the shortest chunks, so every chunk
boundary is crossed by the carried halo, and batches mix lengths so that padding edges fall inside,
at and between chunks.
"""
import numpy as np
import pytest
import tensorflow as tf

from diffwave_vocoder import DiffWaveConfig, Vocoder
from diffwave_vocoder.chunking import ChunkedNetwork, keras_weight_getter, network_weights, upsample
from diffwave_vocoder.features.mel import MelConvention
from diffwave_vocoder.sampler import InferenceOptions

# Receptive field 1 + 2 + ... + 512 + 1 + 2 = 1026 samples per side: longer than 256- and 768-sample chunks.
WIDE = DiffWaveConfig(residual_channels=8, residual_layers=12, dilation_cycle_length=10)
# Another hop (64 = 8 x 8 upsampling) and the unconditional variant.
HOP64 = DiffWaveConfig(residual_channels=8, residual_layers=7, dilation_cycle_length=7,
                       mel=MelConvention(hop_length=64))
UNCONDITIONAL = DiffWaveConfig(residual_channels=8, residual_layers=9, dilation_cycle_length=9, unconditional=True)


def random_vocoder(config: DiffWaveConfig, seed: int = 0) -> Vocoder:
    """Random weights everywhere, including the output layer the reference initialises to zero."""
    vocoder = Vocoder.from_config(config, seed=seed)
    rng = np.random.default_rng(seed)
    for layer_name in ("output_projection",):
        layer = vocoder.model.get_layer(layer_name)
        layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
    return vocoder


def keras_eps(vocoder: Vocoder, audio: np.ndarray, step: float, mel: np.ndarray | None) -> np.ndarray:
    """One utterance, whole, through the Functional model (the reference's maths)."""
    inputs = [audio[None], np.array([step], np.float32)] + ([] if mel is None else [mel[None]])
    return vocoder.model(inputs).numpy()[0]


def chunked_eps(vocoder: Vocoder, chunk_length: int, audio: np.ndarray, step: float, lengths: np.ndarray,
                mel: np.ndarray | None, whole_mel: bool) -> np.ndarray:
    config = vocoder.config
    network = ChunkedNetwork(config, chunk_length)

    @tf.function
    def run(audio, mel, lengths):
        weights = network_weights(config, keras_weight_getter(vocoder.model))
        if mel is None or not whole_mel:
            return network(weights, audio, tf.constant(step), lengths, mel=mel)
        padded = network.padded_length(tf.shape(audio)[1], tf.shape(audio)[0])
        conditioner = network.whole_conditioner(weights, mel, lengths, padded)
        return network(weights, audio, tf.constant(step), lengths, conditioner=conditioner)

    return run(tf.constant(audio), None if mel is None else tf.constant(mel),
               tf.constant(lengths, tf.int32)).numpy()


def padded_batch(config: DiffWaveConfig, frames: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.array(frames) * config.hop_length
    audio = np.zeros((len(frames), lengths.max()), np.float32)
    mel = np.zeros((len(frames), max(frames), config.n_mels), np.float32)
    for i, (f, n) in enumerate(zip(frames, lengths)):
        audio[i, :n] = rng.uniform(-1, 1, n)
        mel[i, :f] = rng.uniform(0, 1, (f, config.n_mels))
    return audio, mel, lengths


@pytest.fixture(scope="module")
def wide():
    return random_vocoder(WIDE, seed=3)


@pytest.mark.parametrize("chunk_length", [256, 768, 4096, 1 << 16])
@pytest.mark.parametrize("whole_mel", [True, False], ids=["mel-once-per-call", "mel-per-chunk"])
def test_chunked_network_equals_whole_input_model(wide, chunk_length, whole_mel):
    frames = [13, 2, 9]  # 3328, 512 and 2304 samples: edges inside, at and between chunks
    audio, mel, lengths = padded_batch(WIDE, frames)
    for step in (0.0, 22.992493, 49.0):
        eps = chunked_eps(wide, chunk_length, audio, step, lengths, mel, whole_mel)
        for i, n in enumerate(lengths):
            expected = keras_eps(wide, audio[i, :n], step, mel[i, :frames[i]])
            assert np.abs(eps[i, :n] - expected).max() <= 1e-5
            assert np.abs(expected).max() > 0.1  # a real signal, not zeros


def test_other_hop_and_unconditional_models():
    hop64 = random_vocoder(HOP64, seed=4)
    audio, mel, lengths = padded_batch(HOP64, [21, 40])
    for whole_mel in (True, False):
        eps = chunked_eps(hop64, 128, audio, 10.5, lengths, mel, whole_mel)
        for i, n in enumerate(lengths):
            assert np.abs(eps[i, :n] - keras_eps(hop64, audio[i, :n], 10.5, mel[i, :n // 64])).max() <= 1e-5

    unconditional = random_vocoder(UNCONDITIONAL, seed=5)
    audio, _, lengths = padded_batch(UNCONDITIONAL, [7, 3])
    eps = chunked_eps(unconditional, 256, audio, 3.25, lengths, None, whole_mel=False)
    for i, n in enumerate(lengths):
        assert np.abs(eps[i, :n] - keras_eps(unconditional, audio[i, :n], 3.25, None)).max() <= 1e-5


@pytest.mark.parametrize("chunk_length", [256, 1000, 8192])
@pytest.mark.parametrize("batch", [1, 3])
def test_tiles_split_the_input_evenly_within_the_chunk_budget(chunk_length, batch):
    """Chunks cover input + receptive field in whole mel frames, none longer than the budget, and
    the padding is under one frame per chunk (a 1 s clip must not compute a mostly empty chunk)."""
    network = ChunkedNetwork(DiffWaveConfig(), chunk_length)
    hop, field = 256, network.receptive_field
    budget = max(hop, network.chunk_length // batch // hop * hop)
    for length in (256, 5120, 22050 // 256 * 256, 110336, 441088):
        tile = int(network.tile_length(tf.constant(length), tf.constant(batch)))
        padded = int(network.padded_length(tf.constant(length), tf.constant(batch)))
        tiles = padded // tile
        assert tile % hop == 0 and hop <= tile <= budget
        assert padded % tile == 0 and padded >= length + field
        assert padded - (length + field) < tiles * hop


def test_chunk_upsampling_equals_the_keras_upsampler(wide):
    """The padded batch's whole mel upsamples each item as the Keras upsampler does that item alone,
    and a window of frames upsamples its inner frames (two frames of margin on each side) to the
    same samples as the whole mel does, padding frames of the shorter item included."""
    frames = [20, 11]
    _, mel, lengths = padded_batch(WIDE, frames)
    weights = network_weights(WIDE, keras_weight_getter(wide.model))
    frame_lengths = tf.constant(lengths // 256, tf.int32)
    whole = upsample(weights, WIDE, tf.constant(mel), tf.constant(0), frame_lengths).numpy()
    keras_upsampler = wide.model.get_layer("spectrogram_upsampler")
    for i, f in enumerate(frames):
        alone = keras_upsampler(tf.constant(mel[i:i + 1, :f])).numpy()[0]
        assert np.abs(whole[i, :f * 256] - alone).max() <= 1e-6
        assert np.abs(alone).max() > 0.1
    padded = np.pad(mel, [(0, 0), (2, 0), (0, 0)])  # index 0 is frame -2
    for first in (-2, 0, 5, 9, 14):  # window frames [first, first + 6), inner [first + 2, first + 4)
        window = upsample(weights, WIDE, tf.constant(padded[:, first + 2:first + 8]), tf.constant(first),
                          frame_lengths).numpy()
        expected = whole[:, (first + 2) * 256:(first + 4) * 256]
        assert np.abs(window[:, 512:1024] - expected).max() <= 1e-6


def test_vocode_chunked_equals_unchunked_for_a_batch_of_lengths(wide):
    """Public API: above the threshold (mel per chunk, small chunks) each utterance of a padded
    batch equals the same utterance vocoded alone, unchunked, with the same seed."""
    rng = np.random.default_rng(9)
    mels = [rng.uniform(0, 1, (f, 80)).astype(np.float32) for f in (17, 6, 11)]
    unchunked = Vocoder(wide.model, WIDE)
    chunked = Vocoder(wide.model, WIDE)
    chunked.inference_options = InferenceOptions(chunk_length=512, chunk_threshold=1024)
    batch = chunked.vocode(mels, seed=[4, 5, 6])
    for m, seed, audio in zip(mels, (4, 5, 6), batch):
        alone = unchunked.vocode(m, seed=seed)
        assert audio.shape == alone.shape == (len(m) * 256,)
        assert np.abs(audio - alone).max() <= 1e-5
        assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0 and audio.std() > 0.01


def test_xla_compiled_chunks_give_the_same_audio(wide):
    mel = np.random.default_rng(2).uniform(0, 1, (7, 80)).astype(np.float32)
    compiled = Vocoder(wide.model, WIDE)
    compiled.inference_options = InferenceOptions(chunk_length=1024, jit_compile=True)
    assert np.abs(compiled.vocode(mel, seed=1) - wide.vocode(mel, seed=1)).max() <= 1e-5


@pytest.mark.parametrize("bad", [{"chunk_length": 0}, {"chunk_threshold": -5}, {"chunk_length": 2.5}])
def test_options_are_validated(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        InferenceOptions(**bad)
