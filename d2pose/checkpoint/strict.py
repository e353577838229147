"""Weights that must fit: evaluation and prediction refuse a checkpoint that leaves the model partly
random.

Detectron2's checkpointer only logs a warning when tensors are missing from a checkpoint, have other
shapes than the model's (they are skipped, the model keeps its initialisation) or are not used; that
is right when a checkpoint initialises training (fine-tuning a new head) and wrong when the model is
to be scored or used. :func:`check_fit` raises :class:`CheckpointMismatchError` instead, naming the
file and the tensors; `d2pose.checkpoint.PoseCheckpointer` calls it when built with `strict=True`
(`train_net.py --eval-only`, `d2pose.engine.PosePredictor`) or inside
:func:`strict_checkpoint_loading` (as Detectron2's own checkpointer does once
`d2pose.install_safeguards()` has run). Training keeps Detectron2's behaviour and its report of what
was not loaded.
"""
import contextlib
import threading
from typing import List

__all__ = ["CheckpointMismatchError", "check_fit", "mismatch_message", "strict_checkpoint_loading",
           "strict_loading_active"]

_state = threading.local()


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model (missing, other shapes, or not the model's)."""


@contextlib.contextmanager
def strict_checkpoint_loading():
    """Within the block, d2pose's checkpointer (and Detectron2's, with the safeguards installed) refuses
    checkpoints that do not fit the model."""
    previous = getattr(_state, "strict", False)
    _state.strict = True
    try:
        yield
    finally:
        _state.strict = previous


def _listing(names: List[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def mismatch_message(source: str, incompatible) -> str:
    parts = []
    if incompatible.missing_keys:
        parts.append(f"{len(incompatible.missing_keys)} model tensors missing from the checkpoint: "
                     f"{_listing(list(incompatible.missing_keys))}")
    if incompatible.incorrect_shapes:
        shapes = [f"{k} (checkpoint {tuple(a)}, model {tuple(b)})" for k, a, b in incompatible.incorrect_shapes]
        parts.append(f"{len(shapes)} tensors of another shape: {_listing(shapes)}")
    if incompatible.unexpected_keys:
        parts.append(f"{len(incompatible.unexpected_keys)} checkpoint tensors the model does not have: "
                     f"{_listing(list(incompatible.unexpected_keys))}")
    return (f"{source} does not fit the model ({'; '.join(parts)}); evaluation and prediction need every tensor. "
            "Check MODEL.WEIGHTS and that the config is the one the checkpoint was trained with "
            "(authors' checkpoints: tools/convert_checkpoint.py prints the overrides they need).")


def strict_loading_active() -> bool:
    """Whether the calling thread is inside :func:`strict_checkpoint_loading`."""
    return getattr(_state, "strict", False)


def check_fit(incompatible, source: str) -> None:
    """Raises :class:`CheckpointMismatchError` when `incompatible` (what fvcore's `_load_model` returns)
    lists missing, unexpected or differently shaped tensors; `source` names the checkpoint."""
    if incompatible.missing_keys or incompatible.unexpected_keys or incompatible.incorrect_shapes:
        raise CheckpointMismatchError(mismatch_message(source, incompatible))
