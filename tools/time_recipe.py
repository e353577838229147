#!/usr/bin/env python
"""Times a config's training step on this machine and prints what its shipped schedule costs here,
in the precision the policy picks, with the machine's measured peaks, and the expected minutes on
the other kind of 2-core machine (AVX2 without native bfloat16 in float32, or this one).

    python tools/time_recipe.py --config-file projects/RLE/configs/synthetic_rle_topdown.yaml [--steps 20]
        [--float32-too] [KEY VALUE ...]
    # the schedule of a config that trains as long as a finished run did (last line: KEY VALUE overrides)
    python tools/time_recipe.py --config-file configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml \
        --fit-log output/comparisons/logocap/log.txt

The step is measured on a throwaway model with the real loader (d2pose.engine.timing); minutes are
the step's compute (loading excluded: the first epoch's images are read cold, later ones come from
the image cache) times the schedule's iterations. The expected float32 minutes on an AVX2 machine
scale this machine's float32 step by the larger of the measured float32 peak ratios (AVX2
reference: ~95 GFLOP/s conv in the default layout, ~141 matmul on 2 threads).
"""
import argparse
from typing import List, Optional

import torch
from d2pose.utils.logger import setup_logger

import d2pose  # noqa: F401  (registers every component)
from d2pose.config import get_d2pose_cfg
from d2pose.engine.cli import add_config_overrides, parse_with_overrides
from d2pose.engine.runs import logged_training_seconds
from d2pose.engine.timing import (AVX2_FLOAT32_PEAKS, StepTiming, avx2_float32_scale, fit_schedule, measure_step_time,
                                  scale_schedule)
from d2pose.utils.machine import describe_machine, measure_peaks


def main(argv: Optional[List[str]] = None) -> List[StepTiming]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--float32-too", action="store_true", help="also time the step in float32 (when 'auto' picks bfloat16)")
    p.add_argument("--fit-seconds", type=float, default=0.0,
                   help="print the schedule (MAX_ITER, STEPS, WARMUP_ITERS as KEY VALUE overrides, last line) "
                        "whose training takes this many seconds here")
    p.add_argument("--fit-log", default="",
                   help="as --fit-seconds, with the training time of a finished run's log.txt (equal wall-clock "
                        "comparisons: tools/reproduce_comparisons.sh logocap)")
    add_config_overrides(p)
    args = parse_with_overrides(p, argv)
    setup_logger(name="d2pose")
    torch.set_num_threads(args.threads)
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    iters = cfg.SOLVER.MAX_ITER
    f32 = measure_peaks(torch.float32, args.threads)
    print(describe_machine(torch.float32, args.threads, f32))
    rows = []
    timing = measure_step_time(cfg, steps=args.steps)
    rows.append(timing)
    if args.float32_too and timing.precision != "float32":
        cfg.defrost()
        cfg.SOLVER.AUTOCAST_DTYPE = "float32"
        rows.append(measure_step_time(cfg, steps=args.steps))
    scale = avx2_float32_scale(f32)
    ref = AVX2_FLOAT32_PEAKS
    print(f"{args.config_file}: {iters} iterations x {cfg.SOLVER.IMS_PER_BATCH} per batch")
    for t in rows:
        minutes = t.compute_seconds * iters / 60
        print(f"  {t.precision:9s} {t.seconds_per_iter:.3f} s/it (median of {t.steps} steps; loading {t.data_seconds:.3f} "
              f"s of it, cold cache) -> {t.compute_seconds:.3f} s/it of compute: {minutes:.1f} min for the schedule")
        if t.precision == "float32":
            print(f"  expected on an AVX2 machine in float32 (x{scale:.2f}: peaks there {ref['conv_default_gflops']:.0f} "
                  f"conv / {ref['matmul_gflops']:.0f} matmul GFLOP/s vs {f32['conv_default_gflops']:.0f} / "
                  f"{f32['matmul_gflops']:.0f} here): {t.compute_seconds * scale:.3f} s/it -> {minutes * scale:.1f} min")
    budget = fit_budget(args)
    if budget:
        iters, steps, warmup = scale_schedule(cfg, fit_schedule(rows[0].seconds_per_iter, budget, 10 ** 7))
        print(f"  {budget / 60:.1f} min of training here at {rows[0].seconds_per_iter:.3f} s/it: {iters} iterations")
        print(f"SOLVER.MAX_ITER {iters} SOLVER.STEPS ({','.join(str(s) for s in steps)},) SOLVER.WARMUP_ITERS {warmup}")
    return rows


def fit_budget(args) -> float:
    """Seconds of training to fit (--fit-seconds, or the training time logged in --fit-log); 0 = none."""
    if args.fit_log:
        iters, seconds = logged_training_seconds(args.fit_log)
        if seconds is None:
            raise ValueError(f"--fit-log {args.fit_log}: no 'Overall training speed' line (has the run finished?)")
        return seconds
    return args.fit_seconds


if __name__ == "__main__":
    main()
