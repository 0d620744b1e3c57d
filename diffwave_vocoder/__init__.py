"""DiffWave diffusion vocoder for TensorFlow/Keras 3, numerically identical to lmnt-com/diffwave."""
__version__ = "0.1.0"

from .mel import MelConvention, compute_mel, mel_spectrogram  # noqa: E402
from .model import build_model  # noqa: E402
from .params import DiffWaveConfig  # noqa: E402
from .sampler import make_schedule, resolve_schedule  # noqa: E402
from .vocoder import Vocoder, load_vocoder  # noqa: E402

__all__ = ["DiffWaveConfig", "MelConvention", "Vocoder", "build_model", "compute_mel", "load_vocoder",
           "make_schedule", "mel_spectrogram", "resolve_schedule"]
