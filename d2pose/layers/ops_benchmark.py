"""Benchmark of multi-scale deformable attention backends, measured side by side in one run (the
command line is tools/benchmark_ops.py).

Compares, at Poseur's decoder shape (256x192 crops, strides 4-32 = 4080 tokens, 8 heads, 4 levels,
4 points, 32 crops x 17 queries, and x4 queries for the noisy-reference training groups) and at a
Deformable-DETR decoder shape:
  * MSDA: the grid_sample reference vs the compiled C++ kernels, forward and forward+backward;
  * EMSDA sampling: the shared-value kernel vs repeat-the-value-M-times-then-MSDA (what Poseur's
    official code does), with both the compiled and the reference MSDA after the repeat.
Prints a table of the fastest times and the speed-up ratios.

Shape shorthand: N batch, Lq queries, S memory tokens, M heads, L levels, P points, C channels.
"""
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..utils.machine import describe_machine
from .ms_deform_attn import compiled_backends, ms_deform_attn, ms_deform_attn_shared

__all__ = ["make_inputs", "timeit", "fwd", "fwd_bwd", "repeat_then_msda", "POSEUR_LEVELS", "DETR_LEVELS",
           "benchmark_ops"]

MSDAInputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_inputs(batch: int, queries: int, spatial: Sequence[Tuple[int, int]], heads: int = 8, channels: int = 32,
                points: int = 4, shared: bool = False, seed: int = 0, requires_grad: bool = True) -> MSDAInputs:
    """Random MSDA inputs (value, spatial shapes, level starts, sampling locations (N, Lq, M, L, P, 2),
    attention weights (N, Lq, M, L, P)); the value is (N, S, M, C), or (N, S, C) for all heads with
    shared=True."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(spatial, dtype=torch.long)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    S, L = int(sizes.sum()), len(spatial)
    vshape = (batch, S, channels) if shared else (batch, S, heads, channels)
    value = torch.randn(vshape, generator=g)
    loc = torch.rand(batch, queries, heads, L, points, 2, generator=g)
    attn = torch.rand(batch, queries, heads, L, points, generator=g)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    for t in (value, loc, attn):
        t.requires_grad_(requires_grad)
    return value, shapes, starts, loc, attn


def timeit(fn: Callable[[], None], repeats: int) -> float:
    """The fastest of `repeats` timed calls after one warm-up call (the least disturbed by other load)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def fwd(op: Callable, *args, **kw) -> Callable[[], None]:
    """A no-grad call of op(*args, **kw)."""
    def run():
        with torch.no_grad():
            op(*args, **kw)

    return run


def fwd_bwd(op: Callable, inputs: MSDAInputs, **kw) -> Callable[[], None]:
    """A forward and backward pass of op(*inputs, **kw) (gradients of value, locations and weights)."""
    def run():
        out = op(*inputs, **kw)
        out.backward(torch.ones_like(out))
        for t in (inputs[0], inputs[3], inputs[4]):
            t.grad = None

    return run


def repeat_then_msda(value: torch.Tensor, shapes: torch.Tensor, starts: torch.Tensor, loc: torch.Tensor,
                     attn: torch.Tensor, backend: str) -> torch.Tensor:
    """Poseur's official sampling: copy the (N, S, C) value for each of the M heads."""
    M = loc.shape[2]
    repeated = value.unsqueeze(2).repeat(1, 1, M, 1)  # (N, S, M, C), M physical copies
    return ms_deform_attn(repeated, shapes, starts, loc, attn, backend=backend)


POSEUR_LEVELS = [(64, 48), (32, 24), (16, 12), (8, 6)]  # 256x192 input, strides 4..32
DETR_LEVELS = [(100, 134), (50, 67), (25, 34), (13, 17)]  # ~800x1066 input, strides 8..64


def benchmark_ops(threads: int = 2, repeats: int = 5, quick: bool = False) -> List[Dict]:
    """Times every case (see the module docstring) with `threads` intra-op threads, the fastest of
    `repeats` runs each (4 crops instead of 32 with `quick`); prints the table and returns its rows
    {name, shape, ref, fast, t_ref, t_fast}."""
    torch.set_num_threads(threads)
    if "cpp" not in compiled_backends():
        raise SystemExit("d2pose._C is not built: run `make setup` first")
    crops = 4 if quick else 32
    rows: List[Dict] = []

    def record(name, shape, reference, fast, label_ref, label_fast):
        t_ref, t_fast = timeit(reference, repeats), timeit(fast, repeats)
        rows.append(dict(name=name, shape=shape, ref=label_ref, fast=label_fast, t_ref=t_ref, t_fast=t_fast))
        print(f"  {name:<34} {shape:<30} {label_ref:>14} {t_ref*1e3:9.2f} ms  {label_fast:>14} {t_fast*1e3:9.2f} ms"
              f"  x{t_ref / t_fast:6.1f}", flush=True)

    # the kernels run in float32 (and float64); the peaks are float32's
    print(describe_machine(torch.float32, threads))
    print(f"threads={torch.get_num_threads()} repeats={repeats} torch={torch.__version__}")
    print(f"  {'measure':<34} {'shape':<30} {'baseline':>14} {'time':>12}  {'d2pose':>14} {'time':>12}  ratio")
    cases = [
        ("Poseur decoder", crops, 17, POSEUR_LEVELS),
        ("Poseur decoder, noisy groups x4", crops, 68, POSEUR_LEVELS),
        ("Deformable-DETR decoder", 2, 300, DETR_LEVELS),
    ]
    for title, n, q, levels in cases:
        shape = f"N={n} Lq={q} S={sum(h * w for h, w in levels)}"
        x = make_inputs(n, q, levels)
        record(f"MSDA fwd [{title}]", shape, fwd(ms_deform_attn, *x, backend="torch"),
               fwd(ms_deform_attn, *x, backend="cpp"), "torch", "cpp")
        record(f"MSDA fwd+bwd [{title}]", shape, fwd_bwd(ms_deform_attn, x, backend="torch"),
               fwd_bwd(ms_deform_attn, x, backend="cpp"), "torch", "cpp")
    for title, n, q, levels in cases[:2]:
        shape = f"N={n} Lq={q} C=256"
        x = make_inputs(n, q, levels, channels=256, shared=True)
        for backend in ("cpp", "torch"):
            record(f"EMSDA fwd [{title}]", shape, fwd(repeat_then_msda, *x, backend=backend),
                   fwd(ms_deform_attn_shared, *x, backend="cpp"), f"repeat+{backend}", "shared cpp")
            record(f"EMSDA fwd+bwd [{title}]", shape, fwd_bwd(repeat_then_msda, x, backend=backend),
                   fwd_bwd(ms_deform_attn_shared, x, backend="cpp"), f"repeat+{backend}", "shared cpp")
        record(f"EMSDA fwd+bwd [{title}]", shape, fwd_bwd(ms_deform_attn_shared, x, backend="torch"),
               fwd_bwd(ms_deform_attn_shared, x, backend="cpp"), "shared torch", "shared cpp")
    return rows
