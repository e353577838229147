"""Training and evaluation for d2pose: the `Trainer` (Detectron2's DefaultTrainer with d2pose's pieces),
its hooks, the launcher behind `train_net.py` (`parse_args`, `setup`, `main`), `PosePredictor`, and the
precision policy."""
from .autocast import AutocastTrainer, precision_trainer
from .precision import PrecisionChoice, autocast_context, inference_precision, resolve_precision, training_precision
from .hooks import SeedPerIteration
from .trainer import Trainer, create_ddp_model
from .launcher import (FLAGS, RUN_FILES, eval_output_dir, guard_output_dir, main, parse_args, previous_run_files,
                       setup)
from .predictor import PosePredictor

__all__ = ["AutocastTrainer", "precision_trainer", "PrecisionChoice", "autocast_context", "inference_precision",
           "resolve_precision", "training_precision", "SeedPerIteration", "Trainer", "create_ddp_model", "FLAGS",
           "RUN_FILES", "eval_output_dir", "guard_output_dir", "main", "parse_args", "previous_run_files", "setup",
           "PosePredictor"]
