"""Measuring vocoders, above the vocoder: the metrics and reports of `diffwave-vocoder evaluate`,
the Griffin-Lim baseline, and the synthesised speech corpus to evaluate (or train) on."""
