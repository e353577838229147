#!/usr/bin/env python
"""Benchmark of multi-scale deformable attention backends, measured side by side in one run.

Compares, at Poseur's decoder shape (256x192 crops, strides 4-32 = 4080 tokens, 8 heads, 4 levels,
4 points, 32 crops x 17 queries, and x4 queries for the noisy-reference training groups) and at a
Deformable-DETR decoder shape:
  * MSDA: the grid_sample reference vs the compiled C++ kernels, forward and forward+backward;
  * EMSDA sampling: the shared-value kernel vs repeat-the-value-M-times-then-MSDA (what Poseur's
    official code does), with both the compiled and the reference MSDA after the repeat.
Prints a table of median times and the speed-up ratios.

    python tools/benchmark_ops.py [--threads 2] [--repeats 5] [--quick]
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

from d2pose.layers import compiled_backends, ms_deform_attn, ms_deform_attn_shared


def make_inputs(batch, queries, spatial, heads=8, channels=32, points=4, shared=False, seed=0, requires_grad=True):
    """Random MSDA inputs. shared=True gives a (N, S, channels) value for all heads."""
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
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def fwd(op, *args, **kw):
    def run():
        with torch.no_grad():
            op(*args, **kw)

    return run


def fwd_bwd(op, inputs, **kw):
    def run():
        out = op(*inputs, **kw)
        out.backward(torch.ones_like(out))
        for t in (inputs[0], inputs[3], inputs[4]):
            t.grad = None

    return run


def repeat_then_msda(value, shapes, starts, loc, attn, backend):
    """Poseur's official sampling: copy the (N, S, C) value for each of the M heads."""
    M = loc.shape[2]
    repeated = value.unsqueeze(2).repeat(1, 1, M, 1)  # (N, S, M, C), M physical copies
    return ms_deform_attn(repeated, shapes, starts, loc, attn, backend=backend)


POSEUR_LEVELS = [(64, 48), (32, 24), (16, 12), (8, 6)]  # 256x192 input, strides 4..32
DETR_LEVELS = [(100, 134), (50, 67), (25, 34), (13, 17)]  # ~800x1066 input, strides 8..64


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the fastest is reported: the least disturbed by other load)")
    parser.add_argument("--quick", action="store_true", help="smaller batch, for a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "cpp" not in compiled_backends():
        raise SystemExit("d2pose._C is not built: run `make setup` first")
    crops = 4 if args.quick else 32
    rows: List[Dict] = []

    def record(name, shape, reference, fast, label_ref, label_fast):
        t_ref, t_fast = timeit(reference, args.repeats), timeit(fast, args.repeats)
        rows.append(dict(name=name, shape=shape, ref=label_ref, fast=label_fast, t_ref=t_ref, t_fast=t_fast))
        print(f"  {name:<34} {shape:<30} {label_ref:>14} {t_ref*1e3:9.2f} ms  {label_fast:>14} {t_fast*1e3:9.2f} ms"
              f"  x{t_ref / t_fast:6.1f}", flush=True)

    from d2pose.utils.machine import describe_machine

    # the kernels run in float32 (and float64); the peaks are float32's
    print(describe_machine(torch.float32, args.threads))
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}")
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


if __name__ == "__main__":
    main()
