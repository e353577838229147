"""Weights that must fit: evaluation and prediction refuse a checkpoint that leaves the model partly
random.

Detectron2's checkpointer only logs a warning when tensors are missing from a checkpoint, have other
shapes than the model's (they are skipped, the model keeps its initialisation) or are not used; that
is right when a checkpoint initialises training (fine-tuning a new head) and wrong when the model is
to be scored or used. Inside :func:`strict_checkpoint_loading` the checkpointer raises
:class:`CheckpointMismatchError` instead, naming the file and the tensors. d2pose uses it for
`train_net.py --eval-only` and for Detectron2's `DefaultPredictor`, which (when d2pose is imported)
loads `MODEL.WEIGHTS` strictly and warns once when `MODEL.WEIGHTS` is empty (an untrained model,
still usable for tests and export). Training keeps Detectron2's behaviour and its report of what
was not loaded.
"""
import contextlib
import logging
import threading
from typing import List

__all__ = ["CheckpointMismatchError", "strict_checkpoint_loading", "install_strict_loading"]

logger = logging.getLogger("d2pose")
_state = threading.local()


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model (missing, other shapes, or not the model's)."""


@contextlib.contextmanager
def strict_checkpoint_loading():
    """Within the block, Detectron2's checkpointer refuses checkpoints that do not fit the model."""
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


_INSTALLED = False
_warned_empty = False


def install_strict_loading() -> None:
    """Patches `DetectionCheckpointer._load_model` (raise when strict) and `DefaultPredictor.__init__`
    (strict for a given MODEL.WEIGHTS, one warning for an empty one). Idempotent."""
    global _INSTALLED
    if _INSTALLED:
        return
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import DefaultPredictor

    d2_load_model = DetectionCheckpointer._load_model
    d2_load_file = DetectionCheckpointer._load_file

    def load_file(self, filename):
        self._d2pose_source = filename
        return d2_load_file(self, filename)

    def load_model(self, checkpoint):
        incompatible = d2_load_model(self, checkpoint)
        if getattr(_state, "strict", False) and (incompatible.missing_keys or incompatible.unexpected_keys
                                                  or incompatible.incorrect_shapes):
            raise CheckpointMismatchError(mismatch_message(getattr(self, "_d2pose_source", "the checkpoint"),
                                                           incompatible))
        return incompatible

    predictor_init = DefaultPredictor.__init__

    def init(self, cfg):
        global _warned_empty
        if not cfg.MODEL.WEIGHTS:
            if not _warned_empty:
                logger.warning("DefaultPredictor: MODEL.WEIGHTS is empty, the model is untrained (random weights)")
                _warned_empty = True
            return predictor_init(self, cfg)
        from .weights import check_weights_file

        check_weights_file(cfg.MODEL.WEIGHTS)
        with strict_checkpoint_loading():
            return predictor_init(self, cfg)

    load_file.__doc__ = d2_load_file.__doc__
    load_model.__doc__ = "Detectron2's _load_model; raises CheckpointMismatchError inside d2pose's strict_checkpoint_loading()."
    init.__doc__ = (DefaultPredictor.__init__.__doc__ or "") + "\n(d2pose: MODEL.WEIGHTS must fit the model.)"
    DetectionCheckpointer._load_file = load_file
    DetectionCheckpointer._load_model = load_model
    DefaultPredictor.__init__ = init
    _INSTALLED = True
