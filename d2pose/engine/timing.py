"""Measuring a config's training step on this machine, and sizing a schedule to a time budget.

`measure_step_time(cfg)` builds what `train_net.py` builds (d2pose's model, optimizer, train loader
and the inner trainer the precision policy picks) and times a few real training steps on a
throwaway model; `fit_schedule(seconds_per_iter, budget_seconds, max_iters)` turns that into an
iteration count. `tools/train_demo.py` (`make demo`)
uses both to stay within its time budget on any CPU (AVX-512 with native bfloat16 or AVX2 in
float32 differ ~4x), and `tools/time_recipe.py` prints them for a shipped recipe.
"""
import logging
import math
import time
from dataclasses import dataclass
from typing import Tuple

from detectron2.engine import SimpleTrainer
from detectron2.utils.events import EventStorage

from ..data.build import build_pose_train_loader
from ..modeling import build_model
from ..solver import build_optimizer
from .autocast import precision_trainer
from .precision import training_precision

__all__ = ["StepTiming", "measure_step_time", "fit_schedule", "scale_schedule", "AVX2_FLOAT32_PEAKS",
           "avx2_float32_scale"]

logger = logging.getLogger(__name__)

# measured on a 2-core AMD EPYC with AVX2 only (no native bfloat16), float32, 2 threads, on
# d2pose.utils.measure_peaks' workloads (GFLOP/s, 2 FLOPs per multiply-add; the convolution in the
# default layout: 76 ms for (32, 64, 48, 64), the matmul 15 ms)
AVX2_FLOAT32_PEAKS = {"conv_default_gflops": 95.0, "matmul_gflops": 141.0}


def avx2_float32_scale(peaks) -> float:
    """How many times slower a float32 step is expected on the AVX2 reference machine than on the
    machine with these measured float32 `peaks`: the larger of the convolution (default layout) and
    matmul peak ratios, so the estimate errs on the slow side."""
    return max(peaks["conv_default_gflops"] / AVX2_FLOAT32_PEAKS["conv_default_gflops"],
               peaks["matmul_gflops"] / AVX2_FLOAT32_PEAKS["matmul_gflops"])


@dataclass
class StepTiming:
    """seconds_per_iter: median whole step (loading included); data_seconds: median loading time of
    those steps, which the first epoch pays in full where images are cached (INPUT.TOPDOWN.CACHE_IMAGES)
    and later epochs hardly at all; compute_seconds: median of step minus loading."""

    seconds_per_iter: float
    precision: str
    steps: int
    setup_seconds: float
    data_seconds: float = 0.0
    compute_seconds: float = 0.0

    def minutes(self, iters: int) -> float:
        return self.seconds_per_iter * iters / 60.0


def measure_step_time(cfg, steps: int = 10, warmup: int = 3) -> StepTiming:
    """Median seconds per training step of `cfg` (its model, batch, loader and precision) over `steps`
    steps after `warmup` untimed ones, on a freshly built model that is then discarded."""
    t0 = time.perf_counter()
    choice = training_precision(cfg)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    loader = build_pose_train_loader(cfg)
    trainer = precision_trainer(SimpleTrainer(model, loader, optimizer), cfg)
    setup = time.perf_counter() - t0
    times, data, compute = [], [], []
    with EventStorage(0) as storage:  # the trainer's metrics go to a throwaway storage
        for i in range(warmup + steps):
            s = time.perf_counter()
            trainer.run_step()
            if i >= warmup:
                times.append(time.perf_counter() - s)
                loading = storage.history("data_time").latest() if "data_time" in storage.histories() else 0.0
                data.append(loading)
                compute.append(times[-1] - loading)
    del trainer, model, optimizer, loader
    return StepTiming(_median(times), choice.name, steps, setup, _median(data), _median(compute))


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def fit_schedule(seconds_per_iter: float, budget_seconds: float, max_iters: int, min_iters: int = 1) -> int:
    """The largest iteration count in [min_iters, max_iters] whose training fits `budget_seconds`."""
    fit = int(math.floor(budget_seconds / max(seconds_per_iter, 1e-9)))
    return max(min_iters, min(max_iters, fit))


def scale_schedule(cfg, iters: int) -> Tuple[int, Tuple[int, ...], int]:
    """(MAX_ITER, STEPS, WARMUP_ITERS) for `iters` iterations, keeping `cfg`'s step positions and
    warm-up as fractions of its schedule."""
    base = max(int(cfg.SOLVER.MAX_ITER), 1)
    steps = tuple(sorted({max(1, min(iters - 1, int(round(s * iters / base)))) for s in cfg.SOLVER.STEPS}))
    warmup = min(int(cfg.SOLVER.WARMUP_ITERS), max(iters // 10, 1))
    return iters, steps, warmup
