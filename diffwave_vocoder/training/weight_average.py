"""An exponential moving average of the trained weights (Polyak averaging), kept beside them.

Averaging the weights over the last few thousand steps smooths out the step-to-step noise of small
batches; diffusion models commonly sample from the average. The trainer keeps the average in each
checkpoint under its own name (`weight_average/...`) and validates and exports it.

Written here rather than taken from Keras or TensorFlow: Keras' `use_ema` keeps the averages among
the optimizer's variables, which a checkpoint stores by position, so switching it on changes where
Adam's moments restore from; it also starts the average at zero when switched on mid-run.
`tf.train.ExponentialMovingAverage` is not checkpointable and predates Keras 3 variables.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

CHECKPOINT_KEY = "weight_average"  # the average's name in a training checkpoint


class WeightAverage(tf.Module):
    """average <- d * average + (1 - d) * weights after each step, d = min(decay, (1 + n) / (10 + n))
    after n updates: TensorFlow's warm-up, so an average started from the initial weights forgets them
    in tens of steps rather than thousands.

    Created under the trainer's distribution strategy, its variables take the first replica's update
    (all replicas hold the same weights)."""

    def __init__(self, variables: Sequence[tf.Variable], decay: float):
        super().__init__(name=CHECKPOINT_KEY)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        once = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=once, name="updates")
        self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False, aggregation=once,
                                     name=f"average_{i}") for i, v in enumerate(variables)]

    def reset(self, variables: Sequence[tf.Variable]) -> None:
        """Start the average afresh from `variables` (a run that turns averaging on when resumed)."""
        for average, variable in zip(self.averages, variables, strict=True):
            average.assign(tf.convert_to_tensor(variable))
        self.updates.assign(0)

    def update(self, variables: Sequence[tf.Variable]) -> None:
        n = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        for average, variable in zip(self.averages, variables, strict=True):
            average.assign(decay * average + (1.0 - decay) * tf.convert_to_tensor(variable))
        self.updates.assign_add(1)

    def copy_to(self, variables: Sequence[tf.Variable]) -> None:
        """Give `variables` (a model built like the averaged one) the average's values."""
        for variable, average in zip(variables, self.averages, strict=True):
            variable.assign(tf.convert_to_tensor(average))
