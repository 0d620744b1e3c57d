"""Mel adapters: convert mels from other acoustic models to a checkpoint\x27s convention."""
