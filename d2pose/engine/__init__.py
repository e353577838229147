"""Training-loop pieces for d2pose (Detectron2 trainers and hooks)."""
from .autocast import AutocastTrainer

__all__ = ["AutocastTrainer"]
