"""Files in and out, below everything else: atomic writes, audio files, the torch.save reader, the
progress line. Nothing here imports the rest of the package."""
