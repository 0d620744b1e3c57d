"""Training, above the vocoder: the trainer, its data pipeline, resumable checkpoints, tf.distribute,
TensorBoard events and the run lock. Inference never imports it."""
