"""Training metrics a model reports besides its losses.

`log_training_metrics` puts scalars into the running trainer's Detectron2 `EventStorage`, so they
reach metrics.json, TensorBoard and the console like the losses; outside a trainer (a bare forward,
a test) it does nothing.
"""
from typing import Mapping

from detectron2.utils.events import EventStorage, get_event_storage

__all__ = ["log_training_metrics"]


def current_storage():
    """The running `EventStorage`, or None outside a trainer."""
    try:
        return get_event_storage()
    except AssertionError:  # Detectron2: "get_event_storage() has to be called inside a 'with EventStorage(...)'"
        return None


def log_training_metrics(metrics: Mapping[str, float], prefix: str = "") -> bool:
    """Puts each metric as a scalar named `prefix + name` into the running storage; returns whether
    one was running."""
    storage = current_storage()
    if not isinstance(storage, EventStorage):
        return False
    for name, value in metrics.items():
        storage.put_scalar(prefix + name, float(value))
    return True
