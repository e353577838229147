"""Non-finite losses stop training with a message that names the iteration and the loss terms.

Detectron2 notices a NaN / inf only in the summed, gathered loss ("Loss became infinite or NaN at
iteration=N") and, with metrics gathered every few iterations, possibly after optimizer steps on
NaN gradients. :func:`install_finite_loss_check` checks every loss term of every iteration on every
process before the optimizer step, so the weights in memory and the last checkpoint on disk stay
those of the last good iteration; no checkpoint is written after the failure.
"""
import math
from typing import Callable, Mapping, Optional

import torch

__all__ = ["NonFiniteLossError", "install_finite_loss_check", "non_finite_terms"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


def non_finite_terms(loss_dict: Mapping[str, torch.Tensor]) -> dict:
    """{name: value} of the terms that are not finite (values as Python floats)."""
    bad = {}
    for k, v in loss_dict.items():
        value = float(v.detach().float().sum()) if isinstance(v, torch.Tensor) else float(v)
        if not math.isfinite(value):
            bad[k] = value
    return bad


def install_finite_loss_check(trainer, last_checkpoint: Optional[Callable[[], str]] = None):
    """Wraps a SimpleTrainer's `_write_metrics` (called after backward and before the optimizer step)
    with a per-term finiteness check. `last_checkpoint()` names the checkpoint training can resume
    from, for the message. Returns the trainer."""
    write = trainer._write_metrics

    def checked(loss_dict, data_time, prefix="", iter=None):
        bad = non_finite_terms(loss_dict)
        if bad:
            it = trainer.iter if iter is None else iter
            terms = ", ".join(f"{k} = {v}" for k, v in bad.items())
            finite = ", ".join(f"{k} = {float(v.detach().float().sum()):.4g}" for k, v in loss_dict.items() if k not in bad)
            where = last_checkpoint() if last_checkpoint is not None else ""
            raise NonFiniteLossError(
                f"non-finite loss at iteration {it}: {terms}" + (f" (finite terms: {finite})" if finite else "")
                + "; training stopped before the optimizer step, so no weights were updated with it. "
                + (f"The last checkpoint, {where}, is kept: fix the cause (data, learning rate, precision) and "
                   "continue with --resume." if where else "No checkpoint had been written yet."))
        return write(loss_dict, data_time, prefix=prefix, iter=iter)

    trainer._write_metrics = checked
    return trainer
