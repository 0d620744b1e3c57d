"""tf.distribute strategies for training: one device, several on one machine, several machines.

With any strategy the trainer works on a global batch; each replica computes its share and the
gradients are summed, so a run gives the same result (up to float rounding) however the batch is
split. Multi-worker clusters are described by the TF_CONFIG environment variable, as usual for
TensorFlow (https://www.tensorflow.org/guide/distributed_training#TF_CONFIG).
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name: str | tf.distribute.Strategy | None = None) -> tf.distribute.Strategy:
    """'default' (one device), 'mirrored' (all local GPUs, or every logical CPU device when there is
    no GPU) or 'multi-worker' (TF_CONFIG). A Strategy object is returned as it is."""
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi-worker needs the TF_CONFIG environment variable describing the "
                             "cluster and this task, e.g. {\"cluster\": {\"worker\": [\"host1:12345\", "
                             "\"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, logs and exports (exactly one process does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())
