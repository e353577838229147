"""The ONNX export's command line (tools/export_onnx.py): a crop-based pose model (RLE, Poseur,
TransPose top-down configs) -> an ONNX file, optionally checked against PyTorch with onnxruntime.

    python tools/export_onnx.py --config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml \
        --output poseur_R_50.onnx --check MODEL.WEIGHTS output/poseur_R_50_d2pose.pth

The graph takes "crops" (B, 3, H, W) uint8 person crops of INPUT.TOPDOWN.INPUT_SIZE in INPUT.FORMAT
channel order, values 0-255, with a dynamic batch B, and returns "keypoints" (B, K, 2) in crop
pixels, "scores" (B, K) and the head's extras (e.g. "pred_keypoint_sigmas"), in float32; the flip
test (TEST.KEYPOINT_FLIP) runs inside the graph unless --no-flip. Detection, cropping and the map
back to image coordinates are not part of it (see d2pose.export.onnx). The model is built on the
CPU from the config (plus KEY VALUE overrides) and MODEL.WEIGHTS is loaded with
d2pose's PoseCheckpointer (read as data) when set (random weights otherwise). An existing output file is never
replaced unless --overwrite is given.

--check runs the exported file with onnxruntime and the PyTorch model on the same random crops
(another batch size than the export's, so that the dynamic axis is exercised) and prints, per
output, the largest error relative to the output's scale: max |a - b| / max(max |b|, 1e-6).
"""
import argparse
import logging
import os
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode

from ..checkpoint import PoseCheckpointer
from ..config import get_d2pose_cfg
from ..modeling import build_model
from ..utils.logger import setup_logger
from .onnx import (DEFAULT_OPSET, CropPoseModel, check_exportable_config, export_onnx, max_relative_errors,
                   run_onnx)

__all__ = ["parse_args", "setup_cfg", "check", "main", "cli"]

logger = logging.getLogger("d2pose.export_onnx")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a top-down (TopDownPoseEstimator) config")
    p.add_argument("--output", default="model.onnx", help="the .onnx file to write")
    p.add_argument("--batch", type=int, default=2, help="batch of the example crops traced (the axis stays dynamic)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: d2pose.export.DEFAULT_OPSET)")
    p.add_argument("--no-flip", action="store_true", help="export without the flip test")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch on random crops")
    p.add_argument("--check-batch", type=int, default=3, help="crops of the --check comparison")
    p.add_argument("--threads", type=int, default=None, help="PyTorch and onnxruntime threads (default: theirs)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..., e.g. MODEL.WEIGHTS path")
    return p.parse_args(argv)


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The frozen config of --config-file with the overrides, for a model on the CPU without detector."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    # crops only: no person detector to build or load
    cfg.MODEL.TOPDOWN.DETECTOR.CONFIG_FILE, cfg.MODEL.TOPDOWN.DETECTOR.WEIGHTS = "", ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def check(path: str, wrapper: CropPoseModel, batch: int, threads: Optional[int] = None) -> Dict[str, float]:
    """{output name: max relative error} of onnxruntime vs the PyTorch wrapper on random uint8 crops."""
    W, H = wrapper.input_size
    generator = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 256, (batch, len(wrapper.model.pixel_mean), H, W), generator=generator,
                          dtype=torch.uint8)
    with torch.no_grad():
        reference = [t.numpy() for t in wrapper(crops)]
    outputs = run_onnx(path, crops.numpy(), intra_op_num_threads=threads)
    return dict(zip(wrapper.output_names, max_relative_errors(outputs, reference)))


def main(argv: Optional[List[str]] = None) -> Dict:
    """Exports; returns {"output": path, "names": output names, "errors": {name: error} (with --check)}."""
    args = parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:  # before building the model
        raise SystemExit(f"{args.output} exists; pass --overwrite to replace it")
    setup_logger(name="d2pose")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = setup_cfg(args)
    check_exportable_config(cfg)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        PoseCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting randomly initialised weights")
    wrapper = CropPoseModel(model, flip_test=False if args.no_flip else None)
    names = export_onnx(wrapper, args.output, batch=args.batch, opset=args.opset or DEFAULT_OPSET)
    W, H = wrapper.input_size
    print(f"wrote {args.output}: input crops (batch, 3, {H}, {W}) uint8 {cfg.INPUT.FORMAT} 0-255, outputs "
          f"{', '.join(names)}; flip test {'on' if wrapper.flip_test else 'off'}")
    result = {"output": args.output, "names": names}
    if args.check:
        errors = check(args.output, wrapper, args.check_batch, args.threads)
        print(f"onnxruntime vs PyTorch on {args.check_batch} random crops, max |a - b| / max(max |b|, 1e-6):")
        for name, err in errors.items():
            print(f"  {name:24s} {err:.3g}")
        result["errors"] = errors
    return result


def cli(argv: Optional[List[str]] = None) -> Dict:
    """main() with a model that cannot be exported reported as a one-line error."""
    try:
        return main(argv)
    except NotImplementedError as e:
        raise SystemExit(f"error: {e}")

