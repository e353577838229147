"""MODEL.DEVICE on the machine at hand. Detectron2's default, which the COCO configs keep, is "cuda";
on a machine where PyTorch finds no CUDA device, `resolve_device` sets it to "cpu" with one warning
that names MODEL.DEVICE, instead of a bare "Found no NVIDIA driver" from deep inside PyTorch.

Every entry point passes through it: the launcher's `setup` (`train_net.py`, `--eval-only`),
`d2pose.engine.PosePredictor` and, with d2pose's safeguards, Detectron2's `DefaultPredictor`. A device
that names no CUDA ("cpu", "mps") is kept as it is.
"""
import logging
from typing import Optional

import torch
from detectron2.config import CfgNode

__all__ = ["cpu_fallback", "resolve_device"]

logger = logging.getLogger("d2pose")


def cpu_fallback(cfg: CfgNode) -> Optional[str]:
    """Sets `cfg.MODEL.DEVICE` to "cpu" when it names CUDA and PyTorch finds no CUDA device (a frozen
    `cfg` is changed too and stays frozen).

    Returns:
        The warning to give about the change, or None when MODEL.DEVICE is kept.
    """
    device = str(cfg.MODEL.DEVICE)
    if device.split(":")[0] != "cuda" or torch.cuda.is_available():
        return None
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    if frozen:
        cfg.freeze()
    return (f"MODEL.DEVICE is {device!r} but PyTorch finds no CUDA device on this machine: running on the CPU "
            f"(MODEL.DEVICE cpu; pass MODEL.DEVICE cpu to say so and silence this warning)")


def resolve_device(cfg: CfgNode) -> str:
    """`cpu_fallback(cfg)` with its warning logged (one line, logger "d2pose"); returns MODEL.DEVICE."""
    message = cpu_fallback(cfg)
    if message:
        logger.warning(message)
    return cfg.MODEL.DEVICE
