"""The precision policy: which floating type training and inference run in, chosen from the hardware.

Config keys (strings): `SOLVER.AUTOCAST_DTYPE` for training and `TEST.AUTOCAST_DTYPE` for inference
(the top-down meta-architecture applies it inside the model, so Detectron2's own `DefaultPredictor`
gets it). Values:

* "auto": on a CPU, bfloat16 where the CPU runs it natively (AVX512_BF16 or AMX, as PyTorch reports,
  or a short measurement where PyTorch cannot tell), float32 otherwise. bfloat16 without hardware
  support is emulated at about 1 GFLOP/s, 70-140x slower than float32 (95 GFLOP/s convolutions and
  141 matmuls on two AVX2 cores), so "auto" never picks it there. For training on CUDA, Detectron2's
  `SOLVER.AMP.ENABLED` stays the switch ("auto" follows it, in float16 as Detectron2's AMPTrainer);
  for inference on CUDA, "auto" is float32.
* "" or "float32": full precision.
* "bfloat16" / "float16": that type under `torch.autocast`, wherever asked. On a CPU without native
  support it still runs, with a warning that says how much slower. On CUDA in training it needs
  `SOLVER.AMP.ENABLED: True` (the two keys contradicting each other is an error naming both).

Heads keep coordinate / sigma layers and losses in float32 whatever the autocast type. Every
decision is logged once, with its reason.
"""
import logging
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from ..utils.machine import cpu_capability, native_bfloat16

__all__ = ["PrecisionChoice", "AUTOCAST_CHOICES", "resolve_precision", "training_precision",
           "inference_precision", "autocast_context"]

logger = logging.getLogger(__name__)

AUTOCAST_CHOICES = ("auto", "", "float32", "bfloat16", "float16")
_DTYPES = {"": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
_logged = set()


@dataclass(frozen=True)
class PrecisionChoice:
    """The outcome of the policy.

    dtype: the autocast type, None for float32.
    trainer: "plain" (float32), "autocast" (d2pose's AutocastTrainer, any device) or "amp"
        (Detectron2's AMPTrainer on CUDA, with gradient scaling).
    reason: why, in words (logged).
    """

    dtype: Optional[torch.dtype]
    trainer: str
    reason: str

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).replace("torch.", "")


def _log_once(key: str, value: str, device: str, choice: PrecisionChoice) -> None:
    tag = (key, value, device, choice)
    if tag not in _logged:
        _logged.add(tag)
        logger.info("%s %r on %s -> %s: %s", key, value, device, choice.name, choice.reason)


def resolve_precision(value: str, device: str, *, key: str = "SOLVER.AUTOCAST_DTYPE", training: bool = True,
                      amp_enabled: bool = False, amp_key: str = "SOLVER.AMP.ENABLED") -> PrecisionChoice:
    """Applies the policy (module docstring) to one key's value on `device` ("cpu", "cuda", "cuda:1").

    Raises ValueError naming `key` (and `amp_key`) for unknown values and contradicting settings.
    """
    if not isinstance(value, str) or value.strip().lower() not in AUTOCAST_CHOICES:
        raise ValueError(f"{key} must be one of {AUTOCAST_CHOICES}, got {value!r} (\"bfloat16\" rather than \"bf16\")")
    value = value.strip().lower()
    kind = torch.device(device).type
    if kind == "cuda":
        choice = _cuda(value, key, training, amp_enabled, amp_key)
    else:
        if training and amp_enabled:
            raise ValueError(f"{amp_key} is True but MODEL.DEVICE is {device!r}: Detectron2's AMPTrainer autocasts "
                             f"on CUDA only. Set {amp_key} False; {key} chooses the precision on the CPU "
                             f"(\"auto\": bfloat16 where the CPU runs it natively, else float32).")
        choice = _cpu(value, key, kind)
    _log_once(key, value, device, choice)
    return choice


def _cpu(value: str, key: str, kind: str) -> PrecisionChoice:
    if value in ("", "float32"):
        return PrecisionChoice(None, "plain", f"{key} asks for float32")
    if kind != "cpu":  # e.g. "mps": no policy of ours, autocast as asked
        dtype = torch.bfloat16 if value == "auto" else _DTYPES[value]
        return PrecisionChoice(dtype, "autocast", f"{key} {value!r} on {kind}")
    native, why = native_bfloat16()
    if value == "auto":
        if native:
            return PrecisionChoice(torch.bfloat16, "autocast", f"native bfloat16: {why}")
        return PrecisionChoice(None, "plain", f"no native bfloat16, float32 is 70-140x faster: {why}")
    if value == "bfloat16" and not native:
        warnings.warn(
            f"{key} 'bfloat16' on a CPU without native bfloat16 ({cpu_capability()}): bfloat16 is emulated there at "
            f"about 1 GFLOP/s, 70-140x slower than float32 (a 3x3 convolution measured 5.25 s vs 76 ms on two AVX2 "
            f"cores). Set {key} 'auto' to get float32 on such CPUs.", RuntimeWarning, stacklevel=3)
        return PrecisionChoice(torch.bfloat16, "autocast", f"asked for explicitly; emulated ({why})")
    if value == "float16":
        warnings.warn(f"{key} 'float16' on the CPU: few CPUs run float16 natively (AMX-FP16); expect it to be "
                      f"slower than float32 elsewhere.", RuntimeWarning, stacklevel=3)
        return PrecisionChoice(torch.float16, "autocast", "asked for explicitly")
    return PrecisionChoice(torch.bfloat16, "autocast", f"asked for explicitly; native ({why})")


def _cuda(value: str, key: str, training: bool, amp_enabled: bool, amp_key: str) -> PrecisionChoice:
    if not training:
        if value == "auto":
            return PrecisionChoice(None, "plain", "inference on CUDA: float32 unless a type is asked for")
        dtype = _DTYPES[value]
        return PrecisionChoice(dtype, "autocast" if dtype else "plain", f"{key} {value!r}")
    if amp_enabled:
        if value in ("", "float32"):
            raise ValueError(f"{amp_key} is True (mixed precision) but {key} is {value!r} (full precision): they "
                             f"contradict each other. On CUDA {amp_key} is the switch: set {key} 'auto' (float16, "
                             f"as Detectron2's AMPTrainer) or 'bfloat16', or turn {amp_key} off.")
        dtype = torch.float16 if value == "auto" else _DTYPES[value]
        return PrecisionChoice(dtype, "amp", f"{amp_key} True: Detectron2's AMPTrainer")
    if value in ("bfloat16", "float16"):
        raise ValueError(f"{key} is {value!r} but {amp_key} is False: on CUDA {amp_key} is the mixed-precision "
                         f"switch. Set {amp_key} True (with {key} {value!r}), or {key} 'auto' for float32.")
    return PrecisionChoice(None, "plain", f"{amp_key} False")


def training_precision(cfg) -> PrecisionChoice:
    """The policy for `cfg`'s training (SOLVER.AUTOCAST_DTYPE, SOLVER.AMP.ENABLED, MODEL.DEVICE)."""
    return resolve_precision(cfg.SOLVER.AUTOCAST_DTYPE, cfg.MODEL.DEVICE, key="SOLVER.AUTOCAST_DTYPE",
                             training=True, amp_enabled=bool(cfg.SOLVER.AMP.ENABLED))


def inference_precision(cfg) -> PrecisionChoice:
    """The policy for `cfg`'s inference (TEST.AUTOCAST_DTYPE, MODEL.DEVICE)."""
    return resolve_precision(cfg.TEST.AUTOCAST_DTYPE, cfg.MODEL.DEVICE, key="TEST.AUTOCAST_DTYPE", training=False)


def autocast_context(dtype: Optional[torch.dtype], device_type: str):
    """torch.autocast for `dtype` on `device_type`, disabled (a no-op) for None / float32."""
    enabled = dtype is not None and dtype != torch.float32
    return torch.autocast(device_type=device_type, dtype=dtype if enabled else torch.bfloat16, enabled=enabled)
