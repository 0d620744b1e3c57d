"""Inference schedules align to the training schedule exactly as the reference's inference.py."""
import numpy as np
import pytest

from diffwave_vocoder import DiffWaveConfig, make_schedule, resolve_schedule


def reference_alignment(train_betas, betas):
    """inference.py's loop, verbatim in numpy (float64, then float32)."""
    talpha_cum = np.cumprod(1 - np.array(train_betas))
    alpha_cum = np.cumprod(1 - np.array(betas))
    T = []
    for s in range(len(betas)):
        for t in range(len(train_betas) - 1):
            if talpha_cum[t + 1] <= alpha_cum[s] <= talpha_cum[t]:
                twiddle = ((talpha_cum[t] ** 0.5 - alpha_cum[s] ** 0.5)
                           / (talpha_cum[t] ** 0.5 - talpha_cum[t + 1] ** 0.5))
                T.append(t + twiddle)
                break
    return np.array(T, dtype=np.float32)


def test_fast_schedule_matches_reference():
    config = DiffWaveConfig()
    schedule = resolve_schedule(config, "fast")
    assert np.array_equal(schedule.steps, reference_alignment(config.noise_schedule, config.inference_noise_schedule))
    assert np.allclose(schedule.steps, [0.0, 0.8941341, 4.086654, 10.451817, 22.992493, 42.918644], atol=1e-6)
    assert np.allclose(schedule.c1, [1.00005, 1.00050, 1.00504, 1.02598, 1.11803, 1.41421], atol=1e-5)
    assert np.allclose(schedule.c2, [0.01, 0.030153, 0.094963, 0.203221, 0.401264, 0.632854], atol=1e-6)
    assert np.allclose(schedule.sigma[1:], [0.009535, 0.031494, 0.095704, 0.220758, 0.446086], atol=1e-6)
    assert schedule.c1.dtype == np.float32


def test_full_schedule_is_every_training_step():
    schedule = resolve_schedule(DiffWaveConfig(), "full")
    assert len(schedule) == 50
    assert np.array_equal(schedule.steps, np.arange(50, dtype=np.float32))


def test_custom_betas():
    betas = [1e-4, 1e-2, 0.3]
    schedule = resolve_schedule(DiffWaveConfig(), betas)
    assert np.array_equal(schedule.steps, reference_alignment(DiffWaveConfig().noise_schedule, betas))


def test_schedule_outside_training_range_is_refused():
    # The paper's LARGE fast schedule (ending in 0.7) overshoots a 50-step / 0.05 training schedule;
    # the reference silently drops the step, we refuse it.
    with pytest.raises(ValueError, match="outside the training schedule"):
        make_schedule(DiffWaveConfig().noise_schedule, [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.7])


@pytest.mark.parametrize("bad", ["medium", [], [0.0, 0.1], [1.5]])
def test_bad_steps(bad):
    with pytest.raises(ValueError):
        resolve_schedule(DiffWaveConfig(), bad)
