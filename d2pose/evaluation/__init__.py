"""Evaluation: evaluators for keypoint datasets and the factory train_net.py uses."""
from .build import build_evaluator

__all__ = ["build_evaluator"]
