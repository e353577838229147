#!/usr/bin/env python
"""d2pose training and evaluation launcher: Detectron2's standard `train_net.py`.

    python train_net.py --config-file configs/X.yaml --num-gpus 8 [KEY VALUE ...]
    python train_net.py --config-file configs/X.yaml --eval-only MODEL.WEIGHTS model.pth

Importing d2pose registers every d2pose component (meta-architectures, backbones, ROI heads,
datasets) so that any config can name them.

Runs never replace each other's results silently:

* Training into an OUTPUT_DIR that holds another run's checkpoints (`last_checkpoint`,
  `model_*.pth`) or metrics is refused unless `--resume` (continue that run) or `--overwrite` (move
  the previous run's files into OUTPUT_DIR/previous_runs/<time>/ and start afresh) is given.
* `--eval-only` writes its config, log and results into OUTPUT_DIR/eval/<time>_<weights name>/ and
  needs weights that fit the model: an empty MODEL.WEIGHTS (without `--resume` on a run with
  checkpoints) or a checkpoint with missing, unexpected or differently shaped tensors is refused,
  naming them.
* `--resume`, `--eval-only` and `--overwrite` may also come after the KEY VALUE overrides.
"""
import logging
import os
import shutil
import sys
import time
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

import d2pose  # noqa: F401  (registers every d2pose component)
from d2pose.checkpoint import check_weights_file
from d2pose.checkpoint.strict import strict_checkpoint_loading
from d2pose.config import add_d2pose_config
from d2pose.engine import precision_trainer, training_precision
from d2pose.engine.finite import install_finite_loss_check
from d2pose.modeling import build_model
from d2pose.data.build import build_pose_test_loader, build_pose_train_loader
from d2pose.solver import build_optimizer


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """Detectron2's create_ddp_model, for CPU models too: DDP takes no device_ids there (Gloo
    multi-process training on CPUs, e.g. `--num-gpus 2` on a machine without GPUs)."""
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    kwargs.setdefault("find_unused_parameters", _DDP_OPTIONS["find_unused_parameters"])
    return _d2_create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)


_DDP_OPTIONS = {"find_unused_parameters": True}  # set from MODEL.DDP_FIND_UNUSED_PARAMETERS by Trainer


_d2_create_ddp_model = d2_defaults.create_ddp_model
d2_defaults.create_ddp_model = create_ddp_model  # what DefaultTrainer.__init__ calls


class Trainer(DefaultTrainer):
    """DefaultTrainer with d2pose's data pipelines, optimizers and evaluators."""

    def __init__(self, cfg):
        training_precision(cfg)  # contradicting precision keys fail here, before anything is built
        _DDP_OPTIONS["find_unused_parameters"] = bool(cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS)
        super().__init__(cfg)
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

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self._sampler is not None:  # continue the stream where the interrupted run was
            self._sampler.start = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH
            if self.start_iter:
                logging.getLogger("d2pose").info("resuming at iteration %d: the data stream continues at sample %d",
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
    def build_model(cls, cfg):
        model = build_model(cfg)  # Detectron2's builder + MODEL.CHANNELS_LAST
        logging.getLogger("d2pose").info("Model:\n%s", model)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_pose_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_pose_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        from d2pose.evaluation import build_evaluator

        return build_evaluator(cfg, dataset_name, output_folder)


FLAGS = ("--resume", "--eval-only", "--overwrite")


def parse_args(argv=None):
    """Detectron2's arguments + `--overwrite`; the boolean flags are also taken from among the overrides."""
    parser = default_argument_parser()
    parser.add_argument("--overwrite", action="store_true",
                        help="train into an OUTPUT_DIR that holds another run: its files move to OUTPUT_DIR/previous_runs/")
    args = parser.parse_args(argv)
    opts = []
    for token in args.opts:
        if token in FLAGS:
            setattr(args, token[2:].replace("-", "_"), True)
        elif token.startswith("--"):
            parser.error(f"option {token} must come before the KEY VALUE overrides (after them it would be read as a key)")
        else:
            opts.append(token)
    if len(opts) % 2:
        parser.error(f"the overrides must be KEY VALUE pairs; {opts[-1]!r} has no value (overrides: {opts})")
    args.opts = opts
    args.started = time.strftime("%Y%m%d-%H%M%S")  # one stamp for every process of the run
    return args


RUN_FILES = ("last_checkpoint", "metrics.json")


def previous_run_files(folder: str):
    """The files of a finished or interrupted training run in `folder` (checkpoints, metrics)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder)
                  if n in RUN_FILES or (n.startswith("model_") and n.endswith((".pth", ".pkl"))))


def guard_output_dir(cfg, args) -> None:
    """Refuses to train over another run (see the module docstring); `--overwrite` moves it aside."""
    if getattr(args, "eval_only", False) or getattr(args, "resume", False) or comm.get_rank() != 0:
        return
    found = previous_run_files(cfg.OUTPUT_DIR)
    if not found:
        return
    if not getattr(args, "overwrite", False):
        raise SystemExit(f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds another run ({', '.join(found[:6])}"
                         f"{', ...' if len(found) > 6 else ''}): pass --resume to continue it, --overwrite to move it "
                         "to OUTPUT_DIR/previous_runs/ and start afresh, or choose another OUTPUT_DIR")
    dest = os.path.join(cfg.OUTPUT_DIR, "previous_runs", _stamp(args))
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(cfg.OUTPUT_DIR):
        if name != "previous_runs":
            shutil.move(os.path.join(cfg.OUTPUT_DIR, name), os.path.join(dest, name))
    logging.getLogger("d2pose").warning("--overwrite: the previous run in %s moved to %s", cfg.OUTPUT_DIR, dest)
    print(f"--overwrite: the previous run in {cfg.OUTPUT_DIR} moved to {dest}", file=sys.stderr)


def eval_output_dir(cfg, args) -> str:
    weights = os.path.splitext(os.path.basename(cfg.MODEL.WEIGHTS.rstrip("/")))[0] if cfg.MODEL.WEIGHTS else "last"
    return os.path.join(cfg.OUTPUT_DIR, "eval", f"{_stamp(args)}_{weights}")


def _stamp(args) -> str:
    if not getattr(args, "started", None):  # args from Detectron2's own parser (scripts calling setup())
        args.started = time.strftime("%Y%m%d-%H%M%S")
    return args.started


class SeedPerIteration(hooks.HookBase):
    """SOLVER.DETERMINISTIC: the model's random draws (dropout, noise) seeded by (SEED, iteration, rank), so
    they do not depend on how many iterations this process has run (a resumed run draws the same)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_step(self):
        import random

        import numpy as np
        import torch

        s = (self.seed * 1000003 + self.trainer.iter * 104729 + comm.get_rank()) % (2**31)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


def setup(args):
    """Config from d2pose's keys, the YAML file and the command-line overrides."""
    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    args.run_dir = cfg.OUTPUT_DIR
    resuming = getattr(args, "resume", False) and os.path.exists(os.path.join(args.run_dir, "last_checkpoint"))
    if not resuming:  # a resumed run reads its last checkpoint, not MODEL.WEIGHTS; checked before any run moves
        try:
            check_weights_file(cfg.MODEL.WEIGHTS, args.config_file)
        except FileNotFoundError as e:
            raise SystemExit(str(e)) from None
    guard_output_dir(cfg, args)
    if getattr(args, "eval_only", False):
        if not cfg.MODEL.WEIGHTS and not (getattr(args, "resume", False) and os.path.exists(os.path.join(args.run_dir, "last_checkpoint"))):
            raise SystemExit("--eval-only needs trained weights: MODEL.WEIGHTS is empty"
                             + (f" and {args.run_dir} has no last_checkpoint" if args.resume else
                                " (give MODEL.WEIGHTS path/to/model.pth, or --resume to use OUTPUT_DIR's last checkpoint)"))
        cfg.OUTPUT_DIR = eval_output_dir(cfg, args)
    cfg.freeze()
    default_setup(cfg, args)
    # d2pose's own messages (precision choice, lr multipliers, data checks) into the same log.txt
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="d2pose", abbrev_name="d2pose")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=getattr(args, "run_dir", cfg.OUTPUT_DIR))
        with strict_checkpoint_loading():  # a checkpoint that leaves tensors random is refused, naming them
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        logging.getLogger("d2pose").info("evaluation results go to %s", cfg.OUTPUT_DIR)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = parse_args()
    logging.getLogger("d2pose").info("Command line arguments: %s", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
