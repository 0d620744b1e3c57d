"""What the network is conditioned on: the mel convention and spectrogram, and the checks that turn
a TTS pipeline's arrays into (frames, n_mels) mels. Imports nothing above `io`."""
