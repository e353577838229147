"""The training and evaluation launcher behind `train_net.py`: arguments, config setup, the run-folder
guard and `main`, on the pattern of Detectron2's tools/train_net.py.

Runs never replace each other's results silently:

* Training into an OUTPUT_DIR that holds another run's checkpoints (`last_checkpoint`,
  `model_*.pth`) or metrics is refused unless `--resume` (continue that run) or `--overwrite` (move
  the previous run's files into OUTPUT_DIR/previous_runs/<time>/ and start afresh) is given.
* `--eval-only` writes its config, log and results into OUTPUT_DIR/eval/<time>_<weights name>/ and
  needs weights that fit the model: an empty MODEL.WEIGHTS (without `--resume` on a run with
  checkpoints) or a checkpoint with missing, unexpected or differently shaped tensors is refused,
  naming them.
* `--resume`, `--eval-only` and `--overwrite` may also come after the KEY VALUE overrides, and the
  overrides may also be given anywhere after `--opts` (d2pose.engine.cli), as every d2pose tool takes them.
"""
import argparse
import logging
import os
import shutil
import sys
import time
from typing import List, Optional, Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..checkpoint import PoseCheckpointer, check_weights_file
from ..config import add_d2pose_config, cpu_fallback
from ..utils.logger import drop_duplicate_handlers, setup_logger
from .cli import add_config_overrides, parse_with_overrides
from .trainer import Trainer

__all__ = ["FLAGS", "RUN_FILES", "device_notes", "eval_output_dir", "guard_output_dir", "main", "parse_args",
           "previous_run_files", "setup"]

logger = logging.getLogger("d2pose")

#: boolean options also accepted among (after) the KEY VALUE overrides
FLAGS = ("--resume", "--eval-only", "--overwrite")
#: the files that mark a folder as holding a training run (besides model_*.pth / model_*.pkl)
RUN_FILES = ("last_checkpoint", "metrics.json")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Detectron2's arguments + `--overwrite` + the `--opts` alias of the overrides (d2pose.engine.cli:
    a config KEY VALUE pair may also stand before an option); the boolean flags are also taken from
    among the overrides."""
    parser = default_argument_parser()
    parser.add_argument("--overwrite", action="store_true",
                        help="train into an OUTPUT_DIR that holds another run: its files move to "
                             "OUTPUT_DIR/previous_runs/")
    add_config_overrides(parser, positional=False)  # Detectron2's parser has the positional overrides
    args = parse_with_overrides(parser, argv, flags=FLAGS)
    args.started = time.strftime("%Y%m%d-%H%M%S")  # one stamp for every process of the run
    return args


def previous_run_files(folder: str) -> List[str]:
    """The files of a finished or interrupted training run in `folder` (checkpoints, metrics)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder)
                  if n in RUN_FILES or (n.startswith("model_") and n.endswith((".pth", ".pkl"))))


def guard_output_dir(cfg: CfgNode, args: argparse.Namespace) -> None:
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
    logger.warning("--overwrite: the previous run in %s moved to %s", cfg.OUTPUT_DIR, dest)
    print(f"--overwrite: the previous run in {cfg.OUTPUT_DIR} moved to {dest}", file=sys.stderr)


def eval_output_dir(cfg: CfgNode, args: argparse.Namespace) -> str:
    """OUTPUT_DIR/eval/<time>_<weights name>/: where `--eval-only` writes its config, log and results."""
    weights = os.path.splitext(os.path.basename(cfg.MODEL.WEIGHTS.rstrip("/")))[0] if cfg.MODEL.WEIGHTS else "last"
    return os.path.join(cfg.OUTPUT_DIR, "eval", f"{_stamp(args)}_{weights}")


def _stamp(args: argparse.Namespace) -> str:
    if not getattr(args, "started", None):  # args from Detectron2's own parser (scripts calling setup())
        args.started = time.strftime("%Y%m%d-%H%M%S")
    return args.started


def _has_last_checkpoint(args: argparse.Namespace) -> bool:
    return os.path.exists(os.path.join(args.run_dir, "last_checkpoint"))


def _check_eval_weights(cfg: CfgNode, args: argparse.Namespace) -> None:
    """--eval-only needs MODEL.WEIGHTS, or --resume on a run with checkpoints."""
    if not cfg.MODEL.WEIGHTS and not (getattr(args, "resume", False) and _has_last_checkpoint(args)):
        raise SystemExit("--eval-only needs trained weights: MODEL.WEIGHTS is empty"
                         + (f" and {args.run_dir} has no last_checkpoint" if args.resume else
                            " (give MODEL.WEIGHTS path/to/model.pth, or --resume to use OUTPUT_DIR's last checkpoint)"))


def device_notes(cfg: CfgNode, args: argparse.Namespace) -> List[str]:
    """Falls MODEL.DEVICE back to the CPU where PyTorch finds no CUDA device (`d2pose.config.cpu_fallback`)
    and returns what to log about the run's devices: that fallback, and that `--num-gpus N` (N > 1) on
    such a machine runs N CPU processes (Detectron2's `launch` uses Gloo there)."""
    notes = [note for note in (cpu_fallback(cfg),) if note]
    processes = int(getattr(args, "num_gpus", 1) or 1)
    if processes > 1 and not torch.cuda.is_available():
        notes.append(f"--num-gpus {processes} on a machine without CUDA: {processes} CPU processes (Gloo backend) run "
                     f"this, each with 1/{processes} of SOLVER.IMS_PER_BATCH and sharing the CPU cores; "
                     "--num-gpus 1 runs one process")
    return notes


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from d2pose's keys, the YAML file and the command-line overrides; the run folder checked
    (see the module docstring), Detectron2's and d2pose's logging set up. Takes the arguments of
    :func:`parse_args` or of Detectron2's `default_argument_parser`."""
    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    args.run_dir = cfg.OUTPUT_DIR
    if not (getattr(args, "resume", False) and _has_last_checkpoint(args)):
        # a resumed run reads its last checkpoint, not MODEL.WEIGHTS; checked before any run moves
        try:
            check_weights_file(cfg.MODEL.WEIGHTS, args.config_file)
        except FileNotFoundError as e:
            raise SystemExit(str(e)) from None
    guard_output_dir(cfg, args)
    notes = device_notes(cfg, args)
    if getattr(args, "eval_only", False):
        _check_eval_weights(cfg, args)
        cfg.OUTPUT_DIR = eval_output_dir(cfg, args)
    cfg.freeze()
    default_setup(cfg, args)
    # each entry (the training demo sets up several runs in one process) adds Detectron2 handlers:
    # one stdout handler and one per log.txt are kept, so that no line is printed twice
    for name in ("fvcore", "detectron2"):
        drop_duplicate_handlers(logging.getLogger(name))
    # d2pose's own messages (precision choice, lr multipliers, data checks) into the same log.txt
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="d2pose")
    for note in notes:
        logger.warning(note)
    return cfg


def main(args: argparse.Namespace):
    """Trains (or, with --eval-only, evaluates) as the arguments say; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # strict: a checkpoint that leaves tensors random is refused, naming them
        checkpointer = PoseCheckpointer(model, save_dir=getattr(args, "run_dir", cfg.OUTPUT_DIR), strict=True)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        logger.info("evaluation results go to %s", cfg.OUTPUT_DIR)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
