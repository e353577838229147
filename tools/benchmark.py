#!/usr/bin/env python
"""Model inference cost on the CPU, measured side by side in one run: the whole top-down model vs
its backbone alone, on the same crops.

For a top-down config (default: Poseur R-50 256x192), times, interleaved round by round so that the
machine's load affects every variant alike, the fastest of `--repeats` rounds of:
  * backbone: the backbone on a normalised crop batch;
  * model: backbone + head + decoding to crop coordinates (no flip test), i.e. what a crop costs;
  * model + flip: the same with the flip test (two passes + fusion);
  * end to end: the meta-architecture's inference on a full image with one person box (cropping,
    flip test, mapping back to the image, Instances), the DefaultPredictor path;
  * the parts outside the network on their own: cropping + warping the person, and decoding to image
    coordinates + packing Instances;
and prints each time and its ratio to the backbone, the time spent outside the network (end to end
minus the flip-tested forward; goal: at most 10% of it), and the achieved GFLOP/s as a fraction of
the machine's measured peak. Poseur's goal: model / backbone <= 1.3.

The precision is the config's TEST.AUTOCAST_DTYPE (d2pose.engine.precision; "" = float32, "auto" =
bfloat16 where the CPU runs it natively), or --precision. The header names the CPU, its capability,
the threads, the precision and the measured conv / matmul peaks in that precision.

    python tools/benchmark.py [--config-file configs/Poseur/poseur_R_50_256x192_coco.yaml]
        [--batch 1] [--threads 2] [--repeats 20] [--precision auto|float32|bfloat16] [opts ...]
"""
import argparse
import time

import numpy as np
import torch

import d2pose  # noqa: F401  (registers every component)
from d2pose.config import get_d2pose_cfg
from d2pose.engine.precision import autocast_context, inference_precision
from d2pose.modeling import build_model
from d2pose.modeling.complexity import topdown_complexity
from d2pose.utils.machine import describe_machine, measure_peaks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default="configs/Poseur/poseur_R_50_256x192_coco.yaml")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--precision", default=None, help="sets TEST.AUTOCAST_DTYPE (default: the config's)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    if args.precision is not None:
        cfg.TEST.AUTOCAST_DTYPE = args.precision
    precision = inference_precision(cfg)
    dtype = precision.dtype or torch.float32
    peaks = measure_peaks(dtype, args.threads)
    print(describe_machine(dtype, args.threads, peaks))
    if cfg.MODEL.META_ARCHITECTURE != "TopDownPoseEstimator":
        raise SystemExit(f"{args.config_file}: MODEL.META_ARCHITECTURE must be TopDownPoseEstimator")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    w, h = cfg.INPUT.TOPDOWN.INPUT_SIZE
    crops = torch.randint(0, 256, (args.batch, 3, h, w), dtype=torch.uint8)
    image = torch.randint(0, 256, (3, 2 * h, 2 * w), dtype=torch.uint8)
    full = [{"image": image, "person_boxes": np.array([[w / 2, h / 2, 1.5 * w, 1.5 * h]])}]
    images = model._normalize(crops)

    def backbone():
        with autocast_context(precision.dtype, "cpu"):
            model.backbone(images)

    def crop_model(flip):
        def run():
            model.flip_test = flip
            model._predict_crops(crops)
        return run

    def end_to_end():
        model.flip_test = True
        model(full)

    # the two parts outside the network, timed on their own
    cropped = model._crop_inputs(full[0])
    model.flip_test = True
    with torch.no_grad():
        decoded = model._predict_crops(cropped["image"])

    def crop_and_warp():
        model._crop_inputs(full[0])

    def decode_and_pack():
        model._to_instances(cropped, *decoded, slice(0, 1), 1)

    variants = {"backbone": backbone, "model": crop_model(False), "model + flip": crop_model(True),
                "end to end (1 person, flip)": end_to_end, "  crop + warp": crop_and_warp,
                "  image coords + Instances": decode_and_pack}
    times = {k: [] for k in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    best = {name: min(t) for name, t in times.items()}
    base = best["backbone"]
    params, gflops = topdown_complexity(model)
    print(f"{args.config_file}: batch {args.batch}, {w}x{h} crops, {args.threads} threads, precision "
          f"{precision.name}, fastest of {args.repeats} interleaved rounds")
    print(f"{'variant':32s} {'ms':>9s} {'x backbone':>11s}")
    for name, t in best.items():
        print(f"{name:32s} {t * 1e3:9.2f} {t / base:11.3f}")
    outside = best["end to end (1 person, flip)"] - best["model + flip"]
    share = outside / best["model + flip"]
    print(f"outside the network (end to end - model + flip, batch 1, one person): {outside * 1e3:.2f} ms = "
          f"{100 * share:.1f}% of the flip-tested forward (goal <= 10%)")
    # fvcore counts one multiply-add as one FLOP; the peaks count 2
    rate = 2 * gflops * args.batch / best["model"]
    print(f"inference path: {params / 1e6:.2f}M parameters, {gflops:.2f} GFLOPs per crop (fvcore, multiply-add = 1); "
          f"model at batch {args.batch}: {rate:.0f} GFLOP/s = {100 * rate / peaks['conv_gflops']:.0f}% of the measured "
          f"conv peak, {100 * rate / peaks['matmul_gflops']:.0f}% of the matmul peak")
    best["outside_fraction"] = share
    return best


if __name__ == "__main__":
    main()
