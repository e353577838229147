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

With --onnx, the crop model is also exported to a temporary ONNX file (d2pose.export.export_onnx,
flip test in the graph) and onnxruntime (CPUExecutionProvider, --threads intra-op threads) is timed
against eager PyTorch (the model's `_predict_crops`, its compiled deformable-attention kernels where
built) on the same uint8 crops, both in float32 with the flip test, at each of --onnx-batches
(default 1 and 32), interleaved round by round, fastest of --onnx-repeats rounds; a table of
batch, PyTorch ms, onnxruntime ms and their ratio follows, headed by the CPU and its capability.

LOGO-CAP configs (MODEL.META_ARCHITECTURE "LOGOCAP") get the bottom-up timing instead: one whole
image at --short-side, the backbone vs everything after it (see `bottomup_benchmark`).

    python tools/benchmark.py [--config-file configs/Poseur/poseur_R_50_256x192_coco.yaml]
        [--batch 1] [--threads 2] [--repeats 20] [--precision auto|float32|bfloat16]
        [--onnx [--onnx-batches 1 32] [--onnx-repeats 5]] [opts ...]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch

import d2pose  # noqa: F401  (registers every component)
from d2pose.config import get_d2pose_cfg
from d2pose.engine.precision import autocast_context, inference_precision
from d2pose.modeling import build_model
from d2pose.modeling.complexity import topdown_complexity
from d2pose.utils.machine import cpu_capability, cpu_model, describe_machine, measure_peaks


def onnx_vs_torch(model, batches, threads: int, repeats: int):
    """{batch: (PyTorch s, onnxruntime s)}: the fastest of `repeats` interleaved rounds of the model's
    flip-tested float32 crop inference, eager vs its ONNX export run by onnxruntime on the CPU."""
    from d2pose.export import export_onnx, onnx_session, run_onnx

    w, h = model.input_size
    crops = {b: torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8) for b in batches}
    arrays = {b: c.numpy() for b, c in crops.items()}
    saved = model.flip_test, model.inference_dtype
    model.flip_test, model.inference_dtype = True, None  # float32, flip test: what the graph holds
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            export_onnx(model, path, flip_test=True)
            session = onnx_session(path, intra_op_num_threads=threads)
            times = {b: ([], []) for b in batches}
            with torch.no_grad():
                for b in batches:  # warm-up
                    model._predict_crops(crops[b])
                    run_onnx(session, arrays[b])
                runners = (lambda b: model._predict_crops(crops[b]), lambda b: run_onnx(session, arrays[b]))
                for r in range(repeats):
                    for b in batches:
                        for i in ((0, 1) if r % 2 == 0 else (1, 0)):  # alternate which runs first
                            t0 = time.perf_counter()
                            runners[i](b)
                            times[b][i].append(time.perf_counter() - t0)
    finally:
        model.flip_test, model.inference_dtype = saved
    return {b: (min(t), min(o)) for b, (t, o) in times.items()}


def fastest_interleaved(variants, repeats: int):
    """{name: fastest of `repeats` rounds} of no-grad callables, one warm-up call each, timed round
    by round (every variant once per round) so that the machine's load affects them alike."""
    times = {k: [] for k in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def bottomup_benchmark(cfg, args, precision):
    """LOGO-CAP on one whole image at short side --short-side (default: INPUT.BOTTOMUP.TEST_SHORT_SIDE),
    4:3, flip test: the backbone alone (image + mirror), the network (backbone + heads), and the whole
    inference (normalise, pad, network, flip fusion, centre NMS, KEMs, KAM network, global windows,
    dynamic convolution, pose NMS, Instances); prints the split between the backbone and everything
    after it. Without --trained-centres every one of the MODEL.LOGOCAP.TOPK_CENTERS centres is kept
    (CENTER_THRESH off): the most work the decoder can get."""
    import torch.nn.functional as F

    if not args.trained_centres:
        cfg.MODEL.LOGOCAP.CENTER_THRESH = -1e9
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    short = args.short_side or cfg.INPUT.BOTTOMUP.TEST_SHORT_SIDE
    H, W = short, int(round(short * 4 / 3))
    image = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    net_in = model.normalize(model.pad(image))[None]
    net_in = torch.cat([net_in, net_in.flip(-1)])

    def backbone():
        with autocast_context(precision.dtype, "cpu"):
            model.backbone(net_in)

    def network():
        with autocast_context(precision.dtype, "cpu"):
            out = model.network(net_in, embeddings=False)
            model.embeddings_eval(out["features"][:1])

    def end_to_end():
        model([{"image": image, "height": H, "width": W}])

    variants = {"backbone (image + mirror)": backbone, "network (backbone + heads)": network,
                "end to end": end_to_end}
    best = fastest_interleaved(variants, args.repeats)
    with torch.no_grad():
        people = len(model.predict(net_in)["poses"])
    total = best["end to end"]
    print(f"{args.config_file}: {W}x{H} image (padded {net_in.shape[-1]}x{net_in.shape[-2]}), flip test, "
          f"{people} candidate poses, {args.threads} threads, precision {precision.name}, fastest of "
          f"{args.repeats} interleaved rounds; {cpu_model()} | capability {cpu_capability()}")
    print(f"{'variant':32s} {'ms':>9s} {'of total':>9s}")
    for name, t in best.items():
        print(f"{name:32s} {t * 1e3:9.2f} {100 * t / total:8.1f}%")
    after = total - best["backbone (image + mirror)"]
    print(f"after the backbone (heads, decoding, local-global adaptation, NMS): {after * 1e3:.2f} ms = "
          f"{100 * after / total:.1f}% of the total (goal <= 35%)")
    best["after_backbone_fraction"] = after / total
    best["people"] = people
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default="configs/Poseur/poseur_R_50_256x192_coco.yaml")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--precision", default=None, help="sets TEST.AUTOCAST_DTYPE (default: the config's)")
    p.add_argument("--onnx", action="store_true", help="also time onnxruntime on the ONNX export vs eager PyTorch")
    p.add_argument("--onnx-batches", type=int, nargs="+", default=[1, 32], help="crop batches of --onnx")
    p.add_argument("--onnx-repeats", type=int, default=5, help="interleaved rounds of --onnx")
    p.add_argument("--short-side", type=int, default=0, help="LOGO-CAP: the image's short side (default: the config's)")
    p.add_argument("--trained-centres", action="store_true",
                   help="LOGO-CAP: keep MODEL.LOGOCAP.CENTER_THRESH (default: keep every top-k centre)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    # crops only: no person detector to build or load
    cfg.MODEL.TOPDOWN.DETECTOR.CONFIG_FILE, cfg.MODEL.TOPDOWN.DETECTOR.WEIGHTS = "", ""
    cfg.MODEL.DEVICE = "cpu"
    if args.precision is not None:
        cfg.TEST.AUTOCAST_DTYPE = args.precision
    precision = inference_precision(cfg)
    dtype = precision.dtype or torch.float32
    peaks = measure_peaks(dtype, args.threads)
    print(describe_machine(dtype, args.threads, peaks))
    if cfg.MODEL.META_ARCHITECTURE == "LOGOCAP":
        return bottomup_benchmark(cfg, args, precision)
    if cfg.MODEL.META_ARCHITECTURE != "TopDownPoseEstimator":
        raise SystemExit(f"{args.config_file}: MODEL.META_ARCHITECTURE must be TopDownPoseEstimator or LOGOCAP")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    w, h = cfg.INPUT.TOPDOWN.INPUT_SIZE
    crops = torch.randint(0, 256, (args.batch, 3, h, w), dtype=torch.uint8)
    image = torch.randint(0, 256, (3, 2 * h, 2 * w), dtype=torch.uint8)
    box = np.array([[w / 2, h / 2, 1.5 * w, 1.5 * h]])
    full = [{"image": image, "person_boxes": box}]
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
    cropped = model._crop_inputs(full[0], box, np.ones(1))
    model.flip_test = True
    with torch.no_grad():
        decoded = model._predict_crops(cropped["image"])

    def crop_and_warp():
        model._crop_inputs(full[0], box, np.ones(1))

    def decode_and_pack():
        model._to_instances(cropped, *decoded, slice(0, 1), 1)

    variants = {"backbone": backbone, "model": crop_model(False), "model + flip": crop_model(True),
                "end to end (1 person, flip)": end_to_end, "  crop + warp": crop_and_warp,
                "  image coords + Instances": decode_and_pack}
    best = fastest_interleaved(variants, args.repeats)
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
    if args.onnx:
        import onnxruntime

        onnx_times = onnx_vs_torch(model, args.onnx_batches, args.threads, args.onnx_repeats)
        print(f"ONNX (onnxruntime {onnxruntime.__version__}, CPUExecutionProvider) vs eager PyTorch "
              f"{torch.__version__}: {cpu_model()} | capability {cpu_capability()} | {args.threads} threads | "
              f"float32, flip test, {w}x{h} uint8 crops, fastest of {args.onnx_repeats} interleaved rounds")
        print(f"{'batch':>5s} {'torch ms':>10s} {'onnxruntime ms':>15s} {'ratio':>7s}")
        for b, (t, o) in onnx_times.items():
            print(f"{b:5d} {t * 1e3:10.2f} {o * 1e3:15.2f} {o / t:7.3f}")
        print("ratio = onnxruntime / torch (< 1: onnxruntime is faster)")
        best["onnx"] = onnx_times
    return best


if __name__ == "__main__":
    main()
