"""d2pose's `Trainer`: Detectron2's `DefaultTrainer` with d2pose's model builder, data pipelines,
optimizers, evaluators, precision policy, checkpointer and DDP options.

`Trainer.__init__` replicates `DefaultTrainer.__init__` (detectron2/engine/defaults.py) line by line,
with two differences: the model is wrapped by :func:`create_ddp_model` (no `device_ids` for CPU models,
`find_unused_parameters` from MODEL.DDP_FIND_UNUSED_PARAMETERS) and the checkpointer is
`d2pose.checkpoint.PoseCheckpointer` (data-only reading, atomic writing). Nothing of Detectron2 is
reassigned.
"""
import logging
import os
import weakref
from typing import Optional

import torch
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine import create_ddp_model as d2_create_ddp_model
from detectron2.utils import comm

from ..checkpoint import PoseCheckpointer
from ..data.build import build_pose_test_loader, build_pose_train_loader
from ..evaluation import build_evaluator
from ..modeling.build import build_model
from ..solver import build_optimizer
from ..utils.logger import setup_logger
from .autocast import precision_trainer
from .finite import install_finite_loss_check
from .hooks import SeedPerIteration
from .precision import training_precision

__all__ = ["Trainer", "create_ddp_model"]

logger = logging.getLogger("d2pose")


def create_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs) -> torch.nn.Module:
    """Detectron2's `create_ddp_model`, for CPU models too: DDP takes no `device_ids` there (Gloo
    multi-process training on CPUs, e.g. `--num-gpus 2` on a machine without GPUs).

    Args:
        model: the model; returned as it is in a single-process run.
        fp16_compression: as for Detectron2's `create_ddp_model`.
        kwargs: arguments of `torch.nn.parallel.DistributedDataParallel`.
    """
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return d2_create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)


class Trainer(DefaultTrainer):
    """DefaultTrainer with d2pose's data pipelines, optimizers, evaluators, precision and checkpointer."""

    def __init__(self, cfg):
        training_precision(cfg)  # contradicting precision keys fail here, before anything is built
        self._init_as_detectron2(cfg)
        # SOLVER.AUTOCAST_DTYPE ("auto": bfloat16 on CPUs that run it natively, else float32; on
        # CUDA SOLVER.AMP.ENABLED decides): same model, loader and optimizer, the loop that fits
        self._trainer = precision_trainer(self._trainer, cfg)
        # a NaN / inf loss term stops training before the optimizer step, naming the term and iteration
        install_finite_loss_check(self._trainer, lambda: self.checkpointer.get_checkpoint_file()
                                  if self.checkpointer.has_checkpoint() else "")
        # the data stream's seed is saved with every checkpoint; resume_or_load restores its position
        self._sampler = getattr(self._trainer.data_loader, "d2pose_sampler", None)
        if self._sampler is not None:
            self.checkpointer.checkpointables["data_sampler"] = self._sampler

    def _init_as_detectron2(self, cfg) -> None:
        """DefaultTrainer.__init__, with d2pose's DDP wrapper and checkpointer."""
        TrainerBase.__init__(self)  # what DefaultTrainer.__init__'s super().__init__() runs
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):  # setup_logger is not called for d2
            setup_logger(name="detectron2")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        # Detectron2's order: model, optimizer, data loader
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False,
                                 find_unused_parameters=bool(cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS))
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # checkpoints go together with the logs and statistics
        self.checkpointer = PoseCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if self._sampler is not None:  # continue the stream where the interrupted run was
            self._sampler.start = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH
            if self.start_iter:
                logger.info("resuming at iteration %d: the data stream continues at sample %d",
                            self.start_iter, self._sampler.start)

    def build_hooks(self):
        hooks_list = super().build_hooks()
        metric = self.cfg.TEST.BEST_CHECKPOINT_METRIC
        if metric and self.cfg.TEST.EVAL_PERIOD > 0 and comm.is_main_process():
            # right after the periodic evaluation, whose flattened results it reads from the storage
            at = next(i for i, h in enumerate(hooks_list) if isinstance(h, hooks.EvalHook)) + 1
            mode = "min" if metric.startswith("-") else "max"
            hooks_list.insert(at, hooks.BestCheckpointer(self.cfg.TEST.EVAL_PERIOD, self.checkpointer,
                                                         metric.lstrip("-"), mode=mode, file_prefix="model_best"))
        if self.cfg.SOLVER.DETERMINISTIC:
            hooks_list.insert(0, SeedPerIteration(self.cfg.SEED))
        return hooks_list

    @classmethod
    def build_model(cls, cfg) -> torch.nn.Module:
        model = build_model(cfg)  # Detectron2's builder + MODEL.CHANNELS_LAST
        logger.info("Model:\n%s", model)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_pose_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_pose_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)
