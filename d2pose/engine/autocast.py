"""Mixed-precision training on any device: Detectron2's AMPTrainer only autocasts on CUDA; this
trainer runs the forward pass (and losses) under `torch.autocast` for the model's device, e.g.
bfloat16 on CPUs with native bfloat16 support, about twice as fast as float32 there. bfloat16 needs
no gradient scaling. Heads keep their final regression layers and losses in float32.

`precision_trainer(trainer, cfg)` applies the precision policy (`d2pose.engine.precision`) to a
Detectron2 trainer's inner loop: the same model, loader and optimizer, run in float32, under this
trainer's autocast, or through Detectron2's AMPTrainer on CUDA."""
import logging
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from .precision import training_precision

__all__ = ["AutocastTrainer", "precision_trainer"]


class AutocastTrainer(SimpleTrainer):
    """SimpleTrainer whose forward pass runs under torch.autocast(device_type, dtype)."""

    def __init__(self, model, data_loader, optimizer, dtype: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.dtype = dtype
        self.device_type = next(model.parameters()).device.type

    def run_step(self):
        assert self.model.training, "[AutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def precision_trainer(trainer: SimpleTrainer, cfg) -> SimpleTrainer:
    """The inner trainer `cfg`'s training precision asks for, built on `trainer`'s model, loader and
    optimizer (`trainer` itself when it already fits). Raises ValueError for contradicting keys."""
    choice = training_precision(cfg)
    logging.getLogger("d2pose").info("training precision: %s (%s)", choice.name, choice.reason)
    common = dict(gather_metric_period=getattr(trainer, "gather_metric_period", 1),
                  zero_grad_before_forward=getattr(trainer, "zero_grad_before_forward", False))
    if choice.trainer == "autocast":
        return AutocastTrainer(trainer.model, trainer.data_loader, trainer.optimizer, dtype=choice.dtype, **common)
    if choice.trainer == "amp":
        if isinstance(trainer, AMPTrainer) and trainer.precision == choice.dtype:
            return trainer
        return AMPTrainer(trainer.model, trainer.data_loader, trainer.optimizer, precision=choice.dtype, **common)
    return trainer
