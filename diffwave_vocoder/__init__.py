"""DiffWave diffusion vocoder for TensorFlow/Keras 3, numerically identical to lmnt-com/diffwave."""
from .mel import MelConvention, compute_mel, mel_spectrogram
from .params import DiffWaveConfig

__version__ = "0.1.0"
