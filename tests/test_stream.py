"""Streaming: the concatenated blocks equal vocode() for the same seed, at every block size, input
length, schedule and push pattern, with a bounded lookahead and bounded memory."""
import math

import numpy as np
import pytest

from diffwave_vocoder import DiffWaveConfig, Vocoder
from diffwave_vocoder.chunking import MEL_MARGIN_FRAMES
from diffwave_vocoder.sampler import InferenceOptions
from diffwave_vocoder.schedule import resolve_schedule
from diffwave_vocoder.stream import MAX_PASS_BLOCKS, lookahead_frames
from helpers import audible_vocoder

# Receptive field 1 + 2 + ... + 512 + 1 + 2 = 1026 samples per side, four frames: with 6 steps the
# dependency cone spans 24 frames each way, and with 256-sample chunks every pass crosses tiles.
WIDE = DiffWaveConfig(residual_channels=8, residual_layers=12, dilation_cycle_length=10)
CUSTOM = [1e-4, 5e-3, 0.1, 0.5]


def mel(frames: int, seed: int = 0, n_mels: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (frames, n_mels)).astype(np.float32)


@pytest.fixture(scope="module")
def wide():
    vocoder = audible_vocoder(WIDE, seed=3, std=0.3)
    vocoder.inference_options = InferenceOptions(chunk_length=256)
    return vocoder


def assert_exact(audio: np.ndarray, expected: np.ndarray) -> None:
    assert audio.dtype == np.float32 and audio.shape == expected.shape
    assert np.abs(audio - expected).max() <= 1e-5
    assert np.mean(np.abs(expected) < 0.999) > 0.3  # not mostly clipped: a real comparison


def pushed(session, frames: np.ndarray, pattern) -> list[np.ndarray]:
    """Push `frames` in pieces of the sizes `pattern` yields, then finish."""
    parts, start = [], 0
    for size in pattern:
        if start >= len(frames):
            break
        parts.append(session.push(frames[start:start + size]))
        start += size
    parts.append(session.finish())
    return parts


@pytest.mark.parametrize("frames", [1, 7, 60])
@pytest.mark.parametrize("block_frames", [1, 3, 1000])
def test_stream_equals_vocode_at_every_block_size_and_length(small_vocoder, frames, block_frames):
    m = mel(frames, frames)
    blocks = list(small_vocoder.stream(m, seed=5, block_frames=block_frames))
    assert all(len(b) > 0 for b in blocks)
    assert_exact(np.concatenate(blocks), small_vocoder.vocode(m, seed=5))


@pytest.mark.parametrize("steps", ["fast", pytest.param("full", marks=pytest.mark.slow), CUSTOM],
                         ids=["fast", "full", "custom"])
def test_stream_equals_vocode_for_every_schedule_across_chunks(wide, steps):
    m = mel(70, 1)
    expected = wide.vocode(m, steps=steps, seed=9)
    blocks = list(wide.stream(m, steps=steps, seed=9, block_frames=5))
    assert len(blocks) > (0 if steps == "full" else 3)  # 50 steps: the cone (50 x 1026) is longer than the input
    assert_exact(np.concatenate(blocks), expected)


def test_stream_passes_grow_after_the_first_block(wide):
    """The first block comes after one block's pass, as with fixed passes; later passes double up to
    MAX_PASS_BLOCKS blocks, and the last flushes what is left."""
    m = mel(300, 5)
    block = 5 * wide.hop_length
    sizes = [len(b) for b in wide.stream(m, seed=2, block_frames=5)]
    growing = [min(2 ** k, MAX_PASS_BLOCKS) * block for k in range(len(sizes) - 1)]
    assert sizes[:-1] == growing and sizes[-1] > 0 and len(sizes) > MAX_PASS_BLOCKS.bit_length() + 1
    assert sum(sizes) == len(m) * wide.hop_length


def test_full_schedule_streams_in_many_blocks(small_vocoder):
    m = mel(40, 7)
    blocks = list(small_vocoder.stream(m, steps="full", seed=3, block_frames=1))
    assert len(blocks) > 6  # passes of 1, 2, 4, then 8 frames over 40
    assert_exact(np.concatenate(blocks), small_vocoder.vocode(m, steps="full", seed=3))


@pytest.mark.parametrize("pattern", [
    pytest.param(lambda: iter(lambda: 1, None), id="one-frame-at-a-time"),
    pytest.param(lambda: iter([0, 3, 0, 17, 2, 40, 1, 100]), id="uneven-with-empty-pushes"),
    pytest.param(lambda: iter([1000]), id="all-at-once"),
])
@pytest.mark.parametrize("block_frames", [1, 8])
def test_push_session_equals_vocode_for_any_push_pattern(wide, pattern, block_frames):
    m = mel(75, 2)
    expected = wide.vocode(m, seed=4)
    session = wide.stream_session(seed=4, block_frames=block_frames)
    parts = pushed(session, m, pattern())
    assert_exact(np.concatenate(parts), expected)
    assert session.emitted == len(expected)


def test_push_returns_audio_only_once_its_lookahead_has_arrived(wide):
    m = mel(80, 3)
    session = wide.stream_session(seed=1, block_frames=1)
    hop, lookahead = wide.hop_length, session.lookahead_frames
    assert lookahead == lookahead_frames(WIDE, resolve_schedule(WIDE, "fast"))
    assert lookahead == math.ceil(6 * 1026 / 256) + MEL_MARGIN_FRAMES
    returned = 0
    for i in range(len(m)):
        returned += len(session.push(m[i:i + 1]))
        received = i + 1
        # Everything final is returned, and nothing that is not: exactly the lookahead is held back.
        assert returned == max(0, (received - MEL_MARGIN_FRAMES) * hop - 6 * 1026)
    assert returned + len(session.finish()) == len(m) * hop


def test_lookahead_for_the_default_model():
    config = DiffWaveConfig()
    assert config.receptive_field == 3069
    assert lookahead_frames(config, resolve_schedule(config, "fast")) == 74  # 0.86 s at 22.05 kHz
    assert lookahead_frames(config, resolve_schedule(config, "full")) == 602


def test_stream_equals_an_item_of_a_padded_batch(wide):
    short, long = mel(30, 5), mel(64, 6)
    batch = wide.vocode([long, short], seed=[2, 8])
    assert_exact(np.concatenate(list(wide.stream(short, seed=8, block_frames=4))), batch[1])
    session = wide.stream_session(seed=2, block_frames=6)
    assert_exact(np.concatenate(pushed(session, long, iter(lambda: 5, None))), batch[0])


def test_memory_stays_bounded_for_long_inputs(small_vocoder):
    """What a session holds does not grow with the number of frames pushed."""
    session = small_vocoder.stream_session(seed=0, block_frames=4)
    sizes = []
    for i in range(120):
        session.push(mel(4, i))
        held = (sum(a.size for a in session._inputs) + session._conditioner.size + session._frames.size)
        sizes.append(held)
    assert max(sizes[60:]) <= max(sizes[10:60])
    assert session.emitted >= (480 - session.lookahead_frames - 4) * 256
    session.finish()


def test_stream_errors(small_vocoder):
    with pytest.raises(ValueError, match="one mel"):
        list(small_vocoder.stream(np.stack([mel(4), mel(4)])))
    with pytest.raises(ValueError, match="n_mels"):
        small_vocoder.stream(mel(4, n_mels=64))
    session = small_vocoder.stream_session(seed=0)
    with pytest.raises(ValueError, match=r"\(k, n_mels=80\)"):
        session.push(np.zeros((3, 81), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        session.push(np.full((3, 80), np.nan, np.float32))
    with pytest.raises(ValueError, match="zero frames"):
        session.finish()
    session.push(mel(3))
    session.finish()
    with pytest.raises(ValueError, match="finished"):
        session.push(mel(1))
    with pytest.raises(ValueError, match="block_frames"):
        small_vocoder.stream_session(block_frames=0)
    unconditional = Vocoder.from_config(DiffWaveConfig(residual_channels=4, residual_layers=2,
                                                       dilation_cycle_length=2, unconditional=True))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.stream_session()
