#!/usr/bin/env python
"""Model inference cost on the CPU, measured side by side in one run: the whole top-down model vs
its backbone alone, on the same crops.

For a top-down config (default: Poseur R-50 256x192), times, interleaved round by round so that the
machine's load affects every variant alike, the fastest of `--repeats` rounds of:
  * backbone: the backbone on a normalised crop batch;
  * model: backbone + head + decoding to crop coordinates (no flip test), i.e. what a crop costs;
  * model + flip: the same with the flip test (two passes + fusion);
  * end to end: the meta-architecture's inference on a full image with one person box (cropping,
    flip test, mapping back to the image, Instances), the DefaultPredictor path.
and prints each time and its ratio to the backbone. Poseur's goal: model / backbone <= 1.3.

    python tools/benchmark.py [--config-file configs/Poseur/poseur_R_50_256x192_coco.yaml]
        [--batch 1] [--threads 2] [--repeats 20] [opts ...]
"""
import argparse
import time

import numpy as np
import torch
from d2pose.modeling import build_model

from d2pose.config import get_d2pose_cfg
from d2pose.modeling.complexity import topdown_complexity


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default="configs/Poseur/poseur_R_50_256x192_coco.yaml")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
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
        model.backbone(images)

    def crop_model(flip):
        def run():
            model.flip_test = flip
            model._predict_crops(crops)
        return run

    def end_to_end():
        model.flip_test = True
        model(full)

    variants = {"backbone": backbone, "model": crop_model(False), "model + flip": crop_model(True),
                "end to end (1 person, flip)": end_to_end}
    times = {k: [] for k in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    base = min(times["backbone"])
    print(f"{args.config_file}: batch {args.batch}, {w}x{h} crops, {args.threads} threads, "
          f"fastest of {args.repeats} interleaved rounds")
    print(f"{'variant':32s} {'ms':>9s} {'x backbone':>11s}")
    for name, t in times.items():
        print(f"{name:32s} {min(t) * 1e3:9.2f} {min(t) / base:11.3f}")
    params, gflops = topdown_complexity(model)
    print(f"inference path: {params / 1e6:.2f}M parameters, {gflops:.2f} GFLOPs per crop (fvcore)")
    return {name: min(t) for name, t in times.items()}


if __name__ == "__main__":
    main()
