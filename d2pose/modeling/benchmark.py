"""Model inference cost on the CPU (or a GPU), measured side by side in one run: the whole model vs
its backbone alone on the same inputs, and the capacity of its inference path (the command line is
tools/benchmark.py).

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
image at --short-side, the backbone vs everything after it (see `bottomup_benchmark`); Keypoint
R-CNN configs ("PoseRCNN") one image at INPUT.MIN_SIZE_TEST (4:3), the backbone (+ FPN) vs the
whole inference, with every one of TEST.DETECTIONS_PER_IMAGE detections kept (score threshold 0:
the most work the ROI heads can get; see `rcnn_benchmark`).

Then, for every kind, the capacity of the inference path (`capacity`): parameters and FLOPs
(fvcore, a multiply-add = 1 FLOP, one pass without the flip test), the latency at batch 1, and the
throughput at the largest batch up to --max-batch (32) that fits in memory: batches 1, 2, 4, ...
are run while the next one's peak memory, predicted linearly from the last two, stays under 90% of
what the machine has available (and, with --budget S, while the predicted time keeps the whole
search under S seconds; the table says which limit ended it); each batch's peak memory (the
process's peak resident set, reset per batch; CUDA: the allocator's peak) is recorded. Top-down:
crops through the model with the config's flip test; bottom-up: whole images (LOGO-CAP's inference
runs image by image, as the authors' does, so its throughput is about 1 / latency); R-CNN: whole
images. The achieved rate is printed as a fraction of the machine's measured convolution peak.

Several configs may be given; with --append [FILE] (default the repository's BENCHMARKS.md) a
dated section with the machine's details (CPU model and capability, threads, precision, measured
peaks, PyTorch) and one row per config is appended to the file. --device cuda runs on a GPU where
there is one (CUDA-synchronised times, the allocator's peak memory).

    python tools/benchmark.py [--config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml [more.yaml ...]]
        [--batch 1] [--threads 2] [--repeats 20] [--precision auto|float32|bfloat16]
        [--max-batch 32] [--budget SECONDS] [--device cpu|cuda] [--append [BENCHMARKS.md]]
        [--onnx [--onnx-batches 1 32] [--onnx-repeats 5]] [opts ...]
"""
import argparse
import datetime
import logging
import os
import tempfile
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d
from tqdm import tqdm

from ..config import get_d2pose_cfg
from ..engine.precision import PrecisionChoice, autocast_context, inference_precision
from ..export import export_onnx, onnx_session, run_onnx
from ..utils.machine import (available_memory_mib, cpu_capability, cpu_model, describe_machine, measure_peaks,
                             peak_memory_mib, reset_peak_memory)
from .build import build_model
from .complexity import bottomup_complexity, rcnn_complexity, topdown_complexity

__all__ = ["synchronize", "fastest_interleaved", "capacity", "print_capacity", "print_variant_shares",
           "calibrate_normalization", "onnx_vs_torch", "topdown_benchmark", "bottomup_benchmark", "rcnn_benchmark",
           "benchmark_summary", "append_markdown", "benchmark_config", "build_parser", "main", "KINDS"]

#: the repository (the markdown file's default folder; configs are named relative to it)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
logger = logging.getLogger("d2pose.benchmark")


def synchronize(device: str) -> None:
    """Waits for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def onnx_vs_torch(model: torch.nn.Module, batches: Sequence[int], threads: int,
                  repeats: int) -> Dict[int, Tuple[float, float]]:
    """{batch: (PyTorch s, onnxruntime s)}: the fastest of `repeats` interleaved rounds of the model's
    flip-tested float32 crop inference, eager vs its ONNX export run by onnxruntime on the CPU."""
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


def fastest_interleaved(variants: Mapping[str, Callable[[], object]], repeats: int,
                        device: str = "cpu") -> Dict[str, float]:
    """{name: fastest of `repeats` rounds} of no-grad callables, one warm-up call each, timed round
    by round (every variant once per round) so that the machine's load affects them alike; CUDA work
    is waited for (`device`)."""
    times = {k: [] for k in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                synchronize(device)
                t0 = time.perf_counter()
                fn()
                synchronize(device)
                times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def capacity(run_batch: Callable[[int], object], max_batch: int = 32, budget_s: float = 0.0, latency_repeats: int = 3,
             device: str = "cpu", memory_fraction: float = 0.9) -> Dict:
    """Latency at batch 1 and throughput at the largest batch up to `max_batch` that fits.

    `run_batch(b)` runs the inference path on b inputs. Batch 1: one warm-up, then the fastest of
    `latency_repeats` runs. Then b = 2, 4, ... (and `max_batch` itself when it is not a power of 2):
    before each batch its peak memory is predicted linearly from the last two batches' (from the
    memory held before the first run when only one is known) and its time from the last batch's;
    the search stops when the prediction exceeds `memory_fraction` of the available memory, or, with
    a `budget_s` > 0, would take the search past `budget_s` seconds. A batch is warmed up first only
    when it is predicted to take under 2 s. A CUDA out-of-memory error ends the search too.

    Returns {"latency_s", "rows": [(batch, seconds, peak MiB)], "batch", "throughput" (inputs per
    second at the largest batch run), "peak_mib" (its peak memory), "limit" (what ended the search)}.
    """
    start = time.perf_counter()
    base = peak_memory_mib(device) if reset_peak_memory(device) else None
    available = available_memory_mib(device)

    def one(b):
        synchronize(device)
        t0 = time.perf_counter()
        run_batch(b)
        synchronize(device)
        return time.perf_counter() - t0

    with torch.no_grad():
        reset_peak_memory(device)
        run_batch(1)
        latency = min(one(1) for _ in range(max(1, latency_repeats)))
        rows = [(1, latency, peak_memory_mib(device))]
        limit = f"batch {max_batch} reached" if max_batch <= 1 else ""
        batches = [b for b in (2, 4, 8, 16, 32, 64, 128, 256) if b < max_batch] + ([max_batch] if max_batch > 1 else [])
        for b in batches:
            (b1, t1, m1) = rows[-1]
            if len(rows) >= 2:
                b0, _, m0 = rows[-2]
                slope = max(m1 - m0, 0.0) / (b1 - b0)
            else:
                slope = max(m1 - (base if base is not None else 0.0), 0.0) / b1
            predicted_mib = m1 + slope * (b - b1)
            predicted_s = t1 * b / b1
            warm = predicted_s < 2.0
            if predicted_mib > memory_fraction * available:
                limit = f"memory (batch {b}: {predicted_mib:.0f} MiB predicted, {available:.0f} MiB available)"
                break
            if budget_s > 0 and time.perf_counter() - start + predicted_s * (2 if warm else 1) > budget_s:
                limit = f"time budget {budget_s:.0f} s (batch {b} predicted {predicted_s:.0f} s)"
                break
            try:
                reset_peak_memory(device)
                if warm:
                    run_batch(b)
                t = one(b)
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
                if "out of memory" not in str(e).lower():
                    raise
                limit = f"out of memory at batch {b}"
                break
            rows.append((b, t, peak_memory_mib(device)))
        else:
            limit = limit or f"batch {max_batch} reached"
    b, t, m = rows[-1]
    return {"latency_s": latency, "rows": rows, "batch": b, "throughput": b / t, "peak_mib": m, "limit": limit}


def print_capacity(cap: Dict, unit: str, gflops: float, passes: int, peaks: Mapping[str, float]) -> float:
    """Prints the capacity rows; returns the achieved GFLOP/s at the largest batch (2 FLOPs per
    multiply-add, `passes` network passes per input: 2 with the flip test)."""
    print(f"{'batch':>5s} {'ms':>10s} {unit + '/s':>10s} {'peak MiB':>9s}")
    for b, t, m in cap["rows"]:
        print(f"{b:5d} {t * 1e3:10.1f} {b / t:10.2f} {m:9.0f}")
    rate = 2 * gflops * passes * cap["throughput"]
    print(f"latency at batch 1: {cap['latency_s'] * 1e3:.1f} ms; throughput {cap['throughput']:.2f} {unit}/s at batch "
          f"{cap['batch']} ({cap['limit']}), peak memory {cap['peak_mib']:.0f} MiB; {rate:.0f} GFLOP/s = "
          f"{100 * rate / peaks['conv_gflops']:.0f}% of the measured conv peak")
    return rate


def print_variant_shares(best: Mapping[str, float], total: float) -> None:
    """Prints each variant's time (s) in ms and as a share of `total` (s)."""
    print(f"{'variant':32s} {'ms':>9s} {'of total':>9s}")
    for name, t in best.items():
        print(f"{name:32s} {t * 1e3:9.2f} {100 * t / total:8.1f}%")


def bottomup_benchmark(cfg: CfgNode, args: argparse.Namespace, precision: PrecisionChoice,
                       peaks: Mapping[str, float]) -> Dict:
    """LOGO-CAP on one whole image at short side --short-side (default: INPUT.BOTTOMUP.TEST_SHORT_SIDE),
    4:3, flip test: the backbone alone (image + mirror), the network (backbone + heads), and the whole
    inference (normalise, pad, network, flip fusion, centre NMS, KEMs, KAM network, global windows,
    dynamic convolution, pose NMS, Instances); prints the split between the backbone and everything
    after it. Without --trained-centres every one of the MODEL.LOGOCAP.TOPK_CENTERS centres is kept
    (CENTER_THRESH off): the most work the decoder can get."""
    if not args.trained_centres:
        cfg.MODEL.LOGOCAP.CENTER_THRESH = -1e9
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    short = args.short_side or cfg.INPUT.BOTTOMUP.TEST_SHORT_SIDE
    H, W = short, int(round(short * 4 / 3))
    image = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    net_in = model.normalize(model.pad(image.to(model.pixel_mean.device)))[None]
    single = net_in
    if model.flip_test:
        net_in = torch.cat([net_in, net_in.flip(-1)])

    dev = args.device.split(":")[0]

    def backbone():
        with autocast_context(precision.dtype, dev):
            model.backbone(net_in)

    def network():
        with autocast_context(precision.dtype, dev):
            out = model.network(net_in, embeddings=False)
            model.embeddings_eval(out["features"][:1])

    def end_to_end():
        model([{"image": image, "height": H, "width": W}])

    variants = {"backbone (image + mirror)": backbone, "network (backbone + heads)": network,
                "end to end": end_to_end}
    best = fastest_interleaved(variants, args.repeats, args.device)
    with torch.no_grad():
        people = len(model.predict(net_in)["poses"])
    total = best["end to end"]
    print(f"{args.config_file}: {W}x{H} image (padded {net_in.shape[-1]}x{net_in.shape[-2]}), flip test, "
          f"{people} candidate poses, {args.threads} threads, precision {precision.name}, fastest of "
          f"{args.repeats} interleaved rounds; {cpu_model()} | capability {cpu_capability()}")
    print_variant_shares(best, total)
    after = total - best["backbone (image + mirror)"]
    print(f"after the backbone (heads, decoding, local-global adaptation, NMS): {after * 1e3:.2f} ms = "
          f"{100 * after / total:.1f}% of the total (goal <= 35%)")
    best["after_backbone_fraction"] = after / total
    best["people"] = people

    params, gflops = bottomup_complexity(model, single.shape[-2], single.shape[-1])
    print(f"{params / 1e6:.2f}M parameters, {gflops:.2f} GFLOPs per network pass on {single.shape[-1]}x"
          f"{single.shape[-2]} (fvcore, multiply-add = 1; the per-person decoding is not counted)")
    inputs = {"image": image, "height": H, "width": W}
    cap = capacity(lambda b: model([inputs] * b), args.max_batch, args.budget, 1, args.device)
    rate = print_capacity(cap, "img", gflops, 2 if model.flip_test else 1, peaks)
    best["summary"] = benchmark_summary(args.config_file, "bottom-up", f"{W}x{H} image", params, gflops,
                                        model.flip_test, cap, best["backbone (image + mirror)"] / total, rate, peaks,
                                        "img", precision)
    return best


def calibrate_normalization(model: torch.nn.Module, run: Callable[[], object]) -> int:
    """Sets every frozen / eval-mode BatchNorm's statistics from its input in one call of `run()`
    (a data-free calibration, layer by layer in forward order; affine parts reset to 1, 0) and
    returns how many layers were set. Untrained deep ResNets under FrozenBN amplify their input
    block after block, so an untrained R-CNN's RPN regresses boxes off the image and no detection
    reaches the ROI heads; calibrated, the features have unit scale as in a trained network and the
    benchmark times the keypoint head on real detections. Costs do not depend on the values."""
    def set_stats(module, inputs):
        x = inputs[0].detach().float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()

    layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)
              or (isinstance(m, torch.nn.BatchNorm2d) and not m.training and m.track_running_stats)]
    hooks = [m.register_forward_pre_hook(set_stats) for m in layers]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return len(layers)


def rcnn_benchmark(cfg: CfgNode, args: argparse.Namespace, precision: PrecisionChoice,
                   peaks: Mapping[str, float]) -> Dict:
    """Keypoint R-CNN on one whole image at INPUT.MIN_SIZE_TEST, 4:3: the backbone (+ FPN) vs the whole
    inference (preprocessing, RPN, box head, NMS, keypoint head, postprocessing) with the score
    threshold at 0, so that TEST.DETECTIONS_PER_IMAGE detections reach the keypoint head. The model is
    untrained (no weights are loaded); its normalisation statistics are calibrated first
    (`calibrate_normalization`)."""
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    H = cfg.INPUT.MIN_SIZE_TEST
    W = min(int(round(H * 4 / 3)), cfg.INPUT.MAX_SIZE_TEST)
    image = torch.randint(0, 256, (3, H, W), dtype=torch.uint8).float()
    inputs = {"image": image, "height": H, "width": W}
    images = model.preprocess_image([inputs]).tensor
    dev = args.device.split(":")[0]
    # no weights are loaded here (MODEL.WEIGHTS of the COCO configs names ImageNet backbones): calibrate
    calibrate_normalization(model, lambda: model.backbone(images))

    def backbone():
        with autocast_context(precision.dtype, dev):
            model.backbone(images)

    def end_to_end():
        with autocast_context(precision.dtype, dev):
            model([inputs])

    best = fastest_interleaved({"backbone (+ FPN)": backbone, "end to end": end_to_end}, args.repeats, args.device)
    with torch.no_grad():
        dets = len(model([inputs])[0]["instances"])
    if dets < cfg.TEST.DETECTIONS_PER_IMAGE:
        logger.warning("%s: %d detections of TEST.DETECTIONS_PER_IMAGE %d reach the keypoint head",
                       args.config_file, dets, cfg.TEST.DETECTIONS_PER_IMAGE)
    total = best["end to end"]
    print(f"{args.config_file}: {W}x{H} image, {dets} detections (score threshold 0), {args.threads} threads, "
          f"precision {precision.name}, fastest of {args.repeats} interleaved rounds; {cpu_model()} | "
          f"capability {cpu_capability()}")
    print_variant_shares(best, total)
    params, gflops = rcnn_complexity(model, [inputs])
    print(f"{params / 1e6:.2f}M parameters, {gflops:.2f} GFLOPs per image with {dets} detections (fvcore through "
          f"Detectron2's FlopCountAnalysis, multiply-add = 1)")

    def run(b):
        with autocast_context(precision.dtype, dev):
            model([inputs] * b)

    cap = capacity(run, args.max_batch, args.budget, 1, args.device)
    rate = print_capacity(cap, "img", gflops, 1, peaks)
    best["detections"] = dets
    best["summary"] = benchmark_summary(args.config_file, "Keypoint R-CNN", f"{W}x{H} image", params, gflops, False,
                                        cap, best["backbone (+ FPN)"] / total, rate, peaks, "img", precision)
    return best


def benchmark_summary(config: str, kind: str, inputs: str, params: float, gflops: float, flip: bool, cap: Dict,
                      backbone_share: float, rate: float, peaks: Mapping[str, float], unit: str,
                      precision: PrecisionChoice) -> Dict:
    """One config's row of the markdown table (`append_markdown`): the config named relative to the
    repository where it is a file, its kind and input, `params` parameters, `gflops` per pass, the
    capacity `cap`, the backbone's share of the batch-1 time and the achieved `rate` (GFLOP/s)."""
    return {"config": os.path.relpath(os.path.abspath(config), REPO_ROOT)
            if os.path.isabs(config) or os.path.exists(config) else config, "kind": kind, "input": inputs, "params_m": params / 1e6, "gflops": gflops, "flip": bool(flip),
            "latency_ms": cap["latency_s"] * 1e3, "backbone_share": backbone_share, "batch": cap["batch"],
            "throughput": cap["throughput"], "unit": unit, "peak_mib": cap["peak_mib"], "limit": cap["limit"],
            "peak_fraction": rate / peaks["conv_gflops"], "precision": precision.name}


TABLE_HEADER = ("| config | kind | input | params (M) | GFLOPs | flip | batch-1 ms | backbone share | throughput "
                "(largest batch) | peak memory (MiB) | of conv peak | batch search ended by |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
FILE_HEADER = """# d2pose benchmarks

Appended by `python tools/benchmark.py --config-file ... --append` (one section per run; newest last).
Each section names the machine it ran on; times on AVX2-only and AVX-512 machines differ a lot (see
the README's "Machines and precision"), so compare rows within a section.

Columns: parameters of the inference path (training-only losses such as RLE's flows excluded);
GFLOPs of one pass without the flip test (fvcore: a multiply-add is 1 FLOP; top-down: one crop;
bottom-up: backbone and heads on one padded image, per-person decoding not counted; Keypoint R-CNN:
the whole inference on one image with every detection kept); batch-1 latency of the whole
inference path (top-down: one crop through backbone, head, decoding and the flip test when on;
bottom-up and R-CNN: one image end to end); backbone share: the backbone's part of the batch-1
inference (top-down: the backbone on the crop, or on the crop and its mirror as one batch with the flip
test, over the crop model's; bottom-up: backbone on the
image and its mirror / end to end; R-CNN: backbone + FPN / end to end); throughput at the largest batch up to 32 that fits in
memory, with that batch; the process's peak resident memory at that batch; the achieved rate as a
fraction of the machine's measured 3x3-convolution peak in that precision (2 FLOPs per
multiply-add); and what ended the batch search (batch 32, memory, or the run's time budget).
"""


def append_markdown(path: str, summaries: Sequence[Dict], machine: str, args: argparse.Namespace) -> None:
    """Appends a dated section (machine line + one row per config) to the markdown file `path`."""
    new = not os.path.exists(path)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [] if not new else [FILE_HEADER]
    lines.append(f"\n## {stamp}: {cpu_model()}, capability {cpu_capability()}, {args.threads} threads, "
                 f"{args.device}\n\n{machine}; PyTorch {torch.__version__}. Command: `python tools/benchmark.py "
                 f"--repeats {args.repeats} --max-batch {args.max_batch}"
                 + (f" --budget {args.budget:.0f}" if args.budget > 0 else "")
                 + (f" --precision {args.precision}" if args.precision is not None else "")
                 + " --config-file <config>`.\n\n")
    lines.append(TABLE_HEADER)
    for r in summaries:
        lines.append(f"| `{r['config']}` | {r['kind']} | {r['input']} | {r['params_m']:.2f} | {r['gflops']:.2f} | "
                     f"{'yes' if r['flip'] else 'no'} | {r['latency_ms']:.1f} | {100 * r['backbone_share']:.0f}% | "
                     f"{r['throughput']:.2f} {r['unit']}/s (batch {r['batch']}) | {r['peak_mib']:.0f} | "
                     f"{100 * r['peak_fraction']:.0f}% ({r['precision']}) | {r['limit']} |\n")
    with open(path, "a") as f:
        f.write("".join(lines))
    print(f"appended {len(summaries)} rows to {path}")


def _topdown_variants(model: torch.nn.Module, crops: torch.Tensor, full: List[Dict], box: np.ndarray,
                      precision: PrecisionChoice) -> Dict[str, Callable[[], None]]:
    """The top-down timings: backbone (on the crops, and on the crops with their mirrors), crop model
    with and without the flip test, end to end on `full`, and the two parts outside the network."""
    dev = model.device
    images = model._normalize(crops)
    pair = torch.cat([images, images.flip(-1)])

    def backbone():
        with autocast_context(precision.dtype, dev.type):
            model.backbone(images)

    def backbone_pair():  # what the flip test's backbone work is, however a head batches the two views
        with autocast_context(precision.dtype, dev.type):
            model.backbone(pair)

    def crop_model(f):
        def run():
            model.flip_test = f
            model._predict_crops(crops)
        return run

    def end_to_end():
        model.flip_test = True
        model(full)

    # the two parts outside the network, timed on their own
    cropped = model._crop_inputs(full[0], box, np.ones(1), detected=False)
    model.flip_test = True
    with torch.no_grad():
        decoded = model._predict_crops(cropped["image"])

    def crop_and_warp():
        model._crop_inputs(full[0], box, np.ones(1), detected=False)

    def decode_and_pack():
        model._to_instances(cropped, *decoded, slice(0, 1), 1)

    return {"backbone": backbone, "backbone, crop + mirror": backbone_pair, "model": crop_model(False),
            "model + flip": crop_model(True),
            "end to end (1 person, flip)": end_to_end, "  crop + warp": crop_and_warp,
            "  image coords + Instances": decode_and_pack}


def _print_onnx_times(onnx_times: Mapping[int, Tuple[float, float]], args: argparse.Namespace,
                      input_size: Tuple[int, int]) -> None:
    import onnxruntime

    w, h = input_size
    print(f"ONNX (onnxruntime {onnxruntime.__version__}, CPUExecutionProvider) vs eager PyTorch "
          f"{torch.__version__}: {cpu_model()} | capability {cpu_capability()} | {args.threads} threads | "
          f"float32, flip test, {w}x{h} uint8 crops, fastest of {args.onnx_repeats} interleaved rounds")
    print(f"{'batch':>5s} {'torch ms':>10s} {'onnxruntime ms':>15s} {'ratio':>7s}")
    for b, (t, o) in onnx_times.items():
        print(f"{b:5d} {t * 1e3:10.2f} {o * 1e3:15.2f} {o / t:7.3f}")
    print("ratio = onnxruntime / torch (< 1: onnxruntime is faster)")


def topdown_benchmark(cfg: CfgNode, args: argparse.Namespace, precision: PrecisionChoice,
                      peaks: Mapping[str, float]) -> Dict:
    """A top-down model on --batch crops of INPUT.TOPDOWN.INPUT_SIZE: the backbone vs the crop model
    (with and without the flip test) vs end to end on one person of a whole image, the parts outside
    the network, (with --onnx) onnxruntime vs PyTorch, and the capacity of the crop model."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    flip = model.flip_test
    w, h = cfg.INPUT.TOPDOWN.INPUT_SIZE
    dev = model.device
    crops = torch.randint(0, 256, (args.batch, 3, h, w), dtype=torch.uint8, device=dev)
    image = torch.randint(0, 256, (3, 2 * h, 2 * w), dtype=torch.uint8)
    box = np.array([[w / 2, h / 2, 1.5 * w, 1.5 * h]])
    full = [{"image": image, "person_boxes": box}]
    best = fastest_interleaved(_topdown_variants(model, crops, full, box, precision), args.repeats, args.device)
    model.flip_test = flip
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
        best["onnx"] = onnx_vs_torch(model, args.onnx_batches, args.threads, args.onnx_repeats)
        model.flip_test = flip
        _print_onnx_times(best["onnx"], args, (w, h))

    # capacity: crops through the whole crop model with the config's flip test
    pool = torch.randint(0, 256, (args.max_batch, 3, h, w), dtype=torch.uint8, device=dev)
    cap = capacity(lambda b: model._predict_crops(pool[:b]), args.max_batch, args.budget, 3, args.device)
    passes = 2 if flip else 1
    rate = print_capacity(cap, "crop", gflops, passes, peaks)
    # the backbone's share of the crop model, timed on the same input: the crop and its mirror as one
    # batch with the flip test (2 x the batch-1 time overstated it for heads that batch the two views)
    share = (best["backbone, crop + mirror"] / best["model + flip"]) if flip else base / best["model"]
    best["summary"] = benchmark_summary(args.config_file, "top-down", f"{w}x{h} crop", params, gflops, flip, cap,
                                        share, rate, peaks, "crop", precision)
    return best


#: the benchmark of each MODEL.META_ARCHITECTURE
KINDS = {"TopDownPoseEstimator": topdown_benchmark, "LOGOCAP": bottomup_benchmark, "PoseRCNN": rcnn_benchmark,
         "GeneralizedRCNN": rcnn_benchmark}


def benchmark_config(config_file: str, args: argparse.Namespace, peaks: Mapping[str, float],
                     precision_override: Optional[str]) -> Dict:
    """The benchmark of one config (its kind's, `KINDS`) with the options of `build_parser`."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(args.opts)
    # crops only: no person detector to build or load
    cfg.MODEL.TOPDOWN.DETECTOR.CONFIG_FILE, cfg.MODEL.TOPDOWN.DETECTOR.WEIGHTS = "", ""
    cfg.MODEL.DEVICE = args.device
    if precision_override is not None:
        cfg.TEST.AUTOCAST_DTYPE = precision_override
    precision = inference_precision(cfg)
    kind = KINDS.get(cfg.MODEL.META_ARCHITECTURE)
    if kind is None:
        raise SystemExit(f"{config_file}: MODEL.META_ARCHITECTURE must be one of {sorted(KINDS)}, got "
                         f"{cfg.MODEL.META_ARCHITECTURE!r}")
    args.config_file = config_file
    return kind(cfg, args, precision, peaks)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", nargs="+", default=["projects/Poseur/configs/poseur_R_50_256x192_coco.yaml"])
    p.add_argument("--batch", type=int, default=1, help="top-down: the crop batch of the split timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--precision", default=None, help="sets TEST.AUTOCAST_DTYPE (default: the config's)")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch of the throughput search")
    p.add_argument("--budget", type=float, default=0.0,
                   help="seconds the throughput search of one config may take (0: no limit)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    p.add_argument("--append", nargs="?", const=os.path.join(REPO_ROOT, "BENCHMARKS.md"), default=None,
                   help="append a section with the results to this markdown file (default BENCHMARKS.md)")
    p.add_argument("--onnx", action="store_true", help="also time onnxruntime on the ONNX export vs eager PyTorch")
    p.add_argument("--onnx-batches", type=int, nargs="+", default=[1, 32], help="crop batches of --onnx")
    p.add_argument("--onnx-repeats", type=int, default=5, help="interleaved rounds of --onnx")
    p.add_argument("--short-side", type=int, default=0, help="LOGO-CAP: the image's short side (default: the config's)")
    p.add_argument("--trained-centres", action="store_true",
                   help="LOGO-CAP: keep MODEL.LOGOCAP.CENTER_THRESH (default: keep every top-k centre)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def _first_config_dtype(args: argparse.Namespace) -> torch.dtype:
    """The inference dtype of the first config (the precision the machine's peaks are measured in)."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file[0])
    cfg.merge_from_list(args.opts)
    if args.precision is not None:
        cfg.TEST.AUTOCAST_DTYPE = args.precision
    return inference_precision(cfg).dtype or torch.float32


def main(argv: Optional[List[str]] = None):
    """Benchmarks every --config-file; returns its results (a list of them for several configs)."""
    args = build_parser().parse_args(argv)
    if args.max_batch < 1:
        raise SystemExit("--max-batch must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device is available here")
    torch.set_num_threads(args.threads)
    dtype = _first_config_dtype(args)
    peaks = measure_peaks(dtype, args.threads)
    machine = describe_machine(dtype, args.threads, peaks)
    print(machine)
    configs = list(args.config_file)
    progress = tqdm(configs, desc="configs", disable=len(configs) < 2)
    results = [benchmark_config(config, args, peaks, args.precision) for config in progress]
    if args.append:
        append_markdown(args.append, [r["summary"] for r in results], machine, args)
    return results[0] if len(results) == 1 else results
