"""Training-loop pieces for d2pose (Detectron2 trainers and hooks) and the precision policy."""
from .autocast import AutocastTrainer, precision_trainer
from .precision import PrecisionChoice, autocast_context, inference_precision, resolve_precision, training_precision

__all__ = ["AutocastTrainer", "precision_trainer", "PrecisionChoice", "autocast_context", "inference_precision",
           "resolve_precision", "training_precision"]
