"""Training hooks of d2pose's trainer: `SeedPerIteration`, the per-iteration seeding of
SOLVER.DETERMINISTIC (a resumed run draws the same random numbers as an uninterrupted one)."""
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["SeedPerIteration"]


class SeedPerIteration(HookBase):
    """SOLVER.DETERMINISTIC: the model's random draws (dropout, noise) seeded by (SEED, iteration, rank), so
    they do not depend on how many iterations this process has run (a resumed run draws the same)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_step(self):
        s = (self.seed * 1000003 + self.trainer.iter * 104729 + comm.get_rank()) % (2**31)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
