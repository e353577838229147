"""Drawing the dependency areas of a TransPose model's predicted keypoints (paper Sec. 3.3, Eq. 4,
Fig. 6); the command line is projects/TransPose/tools/visualize_dependency.py.

    python projects/TransPose/tools/visualize_dependency.py --config-file projects/TransPose/configs/synthetic_transpose_r.yaml \
        [--dataset synthetic_pose_val] [--image-index 0] [--person-index 0] \
        [--input IMAGE --box X0 Y0 X1 Y1] [--layer -1] [--threshold DELTA] [--areas dependency affected] \
        [--output output/dependency.jpg] [--overwrite] MODEL.WEIGHTS output/synthetic_transpose_r/model_final.pth

One person crop (a ground-truth box of the dataset, DATASETS.TEST[0] by default, or --box on your
own --input image) goes through the model with the head's attention output switched on
(`TransPoseHead.attention_layers`); for each predicted keypoint i (the token under its heatmap
maximum), the row A[i, :] of the chosen layer's head-averaged attention is its dependency area and
the column A[:, i] its affected area. Each map is upsampled by the token stride onto the crop and
drawn where A >= delta (Eq. 4; default 0.01 for stride-8 TP-R models, 0.00075 for stride-4 TP-H, the
authors' values), redder for higher weights, with the keypoint marked by a white star. The image is
a grid: the crop with the predicted skeleton, then one cell per keypoint, one row per kind of area.
The numbers behind the image (per keypoint: token, area size in tokens, attention mass inside the
area) are printed. An existing output file is kept unless --overwrite is given.

Shape shorthand: K keypoints, (h, w) token grid, L = h w tokens, (H, W) crop pixels.
"""
import argparse
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model
from d2pose.utils.logger import setup_logger

from d2pose.config import get_d2pose_cfg
from d2pose.data.datasets.coco_keypoints import box_xyxy
from d2pose.data.transforms.affine import box_to_center_size, crop_affine, warp_image
from d2pose.utils.visualizer import register_demo_drawing

from .dependency import DEFAULT_THRESHOLDS, affected_areas, dependency_areas, keypoint_tokens
from .head import TransPoseHead

__all__ = ["parse_args", "select_person", "render", "main"]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default="", help="dataset of the person (default: DATASETS.TEST[0])")
    p.add_argument("--image-index", type=int, default=0, help="image of the dataset")
    p.add_argument("--person-index", type=int, default=0, help="annotated person of that image")
    p.add_argument("--input", default="", help="your own image instead of a dataset person (with --box)")
    p.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="person box in --input")
    p.add_argument("--layer", type=int, default=-1, help="encoder layer (negative: from the last)")
    p.add_argument("--threshold", type=float, default=None, help="Eq. 4's delta (default by token stride)")
    p.add_argument("--areas", nargs="+", default=["dependency", "affected"], choices=["dependency", "affected"])
    p.add_argument("--cell-height", type=int, default=192, help="height of each grid cell in pixels")
    p.add_argument("--columns", type=int, default=9, help="cells per row of the grid")
    p.add_argument("--output", default="output/dependency_areas.jpg")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (MODEL.WEIGHTS)")
    args = p.parse_args(argv)
    if bool(args.input) != bool(args.box):
        p.error("--input and --box go together")
    return args


def select_person(args: argparse.Namespace, cfg: CfgNode, image_format: str) -> Tuple[np.ndarray, np.ndarray, str]:
    """(image, box XYXY, name) of the chosen person: --input with --box, or --person-index of
    --image-index in --dataset (default DATASETS.TEST[0])."""
    if args.input:
        if not os.path.isfile(args.input):
            raise FileNotFoundError(f"--input {args.input} does not exist")
        return utils.read_image(args.input, format=image_format), np.asarray(args.box, dtype=np.float64), args.input
    name = args.dataset or cfg.DATASETS.TEST[0]
    records = DatasetCatalog.get(name)
    if not 0 <= args.image_index < len(records):
        raise IndexError(f"--image-index {args.image_index}: dataset {name!r} has {len(records)} images")
    record = records[args.image_index]
    people = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    if not 0 <= args.person_index < len(people):
        raise IndexError(f"--person-index {args.person_index}: image {record['file_name']} has {len(people)} people")
    box = np.asarray(box_xyxy(people[args.person_index]), dtype=np.float64)
    return utils.read_image(record["file_name"], format=image_format), box, f"{record['file_name']} person {args.person_index}"


def _colour(weights: np.ndarray, mask: np.ndarray, crop_rgb: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Jet-coloured weights (normalised to the cell's maximum) blended onto the crop where mask."""
    w = weights / max(float(weights.max()), 1e-12)
    jet = cv2.applyColorMap((255 * w).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    out = (0.35 * crop_rgb).astype(np.float32)
    blend = (1 - alpha) * crop_rgb + alpha * jet
    out[mask] = blend[mask]
    return out.astype(np.uint8)


def _star(img: np.ndarray, xy: Sequence[float], size: float, colour=(255, 255, 255)) -> None:
    """Draws a filled five-pointed star of radius `size` centred on `xy` into `img`."""
    cx, cy = float(xy[0]), float(xy[1])
    pts = []
    for k in range(10):
        r = size if k % 2 == 0 else size * 0.45
        a = -np.pi / 2 + k * np.pi / 5
        pts.append([cx + r * np.cos(a), cy + r * np.sin(a)])
    cv2.fillPoly(img, [np.round(np.asarray(pts)).astype(np.int32)], colour, lineType=cv2.LINE_AA)


def render(crop_rgb: np.ndarray, coords: np.ndarray, attention: torch.Tensor, grid: Tuple[int, int], stride: int,
           threshold: float, areas: Sequence[str], names: Sequence[str], rules: Sequence, cell_height: int = 192,
           columns: int = 9) -> Tuple[np.ndarray, Dict]:
    """The grid image (numpy RGB) and per-keypoint statistics.

    Args:
        crop_rgb: (H, W, 3) uint8 crop. coords: (K, 2) predicted keypoints in crop pixels.
        attention: (L, L) head-averaged attention. grid: (h, w) tokens. stride: token stride.
        threshold: delta. areas: "dependency" and / or "affected". names: K keypoint names.
        rules: Detectron2 keypoint_connection_rules (name, name, colour).
        cell_height, columns: cell size in pixels and cells per row of the grid.
    """
    H, W = crop_rgb.shape[:2]
    scale = cell_height / H
    size = (int(round(W * scale)), int(round(H * scale)))
    base = cv2.resize(crop_rgb, size, interpolation=cv2.INTER_LINEAR)
    pts = np.asarray(coords, dtype=np.float64) * scale
    tokens = keypoint_tokens(torch.as_tensor(coords, dtype=torch.float32), grid, stride)
    first = base.copy()
    index = {n: i for i, n in enumerate(names)}
    for a, b, colour in rules:
        if a in index and b in index:
            pa, pb = pts[index[a]], pts[index[b]]
            cv2.line(first, tuple(int(round(v)) for v in pa), tuple(int(round(v)) for v in pb),
                     tuple(int(c) for c in colour), 2, cv2.LINE_AA)
    for p in pts:
        cv2.circle(first, tuple(int(round(v)) for v in p), 3, (255, 255, 255), -1, cv2.LINE_AA)
    rows, stats = [], {}
    for kind in areas:
        fn = dependency_areas if kind == "dependency" else affected_areas
        weights, masks = fn(attention, tokens, grid, threshold)
        cells = [first.copy()]
        for k in range(len(names)):
            # each token covers stride x stride crop pixels: nearest upsampling keeps Eq. 4's area exact
            wmap = cv2.resize(weights[k].numpy().astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
            mmap = cv2.resize(masks[k].numpy().astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
            cell = _colour(wmap, mmap, base.astype(np.float32))
            _star(cell, pts[k], max(4.0, cell_height / 24))
            cv2.putText(cell, names[k][:14], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
            cells.append(cell)
            stats.setdefault(names[k], {"token": int(tokens[k])})[kind] = {
                "tokens": int(masks[k].sum()), "mass": float((weights[k] * masks[k]).sum())}
        cv2.putText(cells[0], kind, (4, cells[0].shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1,
                    cv2.LINE_AA)
        cells = [np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cells]
        cells += [np.zeros_like(cells[0])] * (-len(cells) % columns)
        rows += [np.concatenate(cells[i:i + columns], axis=1) for i in range(0, len(cells), columns)]
    return np.concatenate(rows, axis=0), stats


def _load_model(args: argparse.Namespace) -> Tuple[CfgNode, torch.nn.Module]:
    """(cfg, eval model) of --config-file with its TransPoseHead returning the attention of --layer."""
    logger = setup_logger(name="d2pose")
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    # crops only: no person detector to build or load
    cfg.MODEL.TOPDOWN.DETECTOR.CONFIG_FILE, cfg.MODEL.TOPDOWN.DETECTOR.WEIGHTS = "", ""
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else cfg.MODEL.DEVICE
    model = build_model(cfg).eval()
    if not isinstance(getattr(model, "head", None), TransPoseHead):
        raise ValueError(f"{args.config_file}: MODEL.TOPDOWN.HEAD is {cfg.MODEL.TOPDOWN.HEAD!r}; dependency areas need "
                         "the attention of a TransPoseHead")
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the areas of an untrained model are drawn")
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if not -model.head.num_layers <= args.layer < model.head.num_layers:
        raise ValueError(f"--layer {args.layer}: the encoder has {model.head.num_layers} layers")
    model.head.attention_layers = [args.layer]
    return cfg, model


def _print_stats(stats: Dict, scores: torch.Tensor, names: Sequence[str], areas: Sequence[str]) -> None:
    for k, name in enumerate(names):
        s = stats[name]
        parts = [f"{kind} {s[kind]['tokens']} tokens / mass {s[kind]['mass']:.2f}" for kind in areas]
        print(f"  {name:16s} score {float(scores[0, k]):.2f} token {s['token']:4d}  " + "  ".join(parts))


def main(argv: Optional[List[str]] = None) -> Dict:
    """Draws the chosen person's areas into --output and prints their numbers; returns the
    per-keypoint statistics of `render`."""
    args = parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    cfg, model = _load_model(args)
    stride = model.head.in_stride
    threshold = args.threshold if args.threshold is not None else DEFAULT_THRESHOLDS.get(stride, 0.01)

    image, box, what = select_person(args, cfg, cfg.INPUT.FORMAT)
    W, H = model.input_size
    center, size = box_to_center_size(box, W / H, cfg.INPUT.TOPDOWN.PADDING)
    crop = warp_image(image, crop_affine(center, size, (W, H)), (W, H))
    with torch.no_grad():
        x = torch.as_tensor(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
        out = model.head(model.backbone(model._normalize(x)))
        coords, scores, _ = model.head.predict(out)
    attention = out["attentions"][0, 0].float().cpu()
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else cfg.DATASETS.TRAIN[0])
    names = list(meta.get("keypoint_names", [str(k) for k in range(coords.shape[1])]))
    rgb = crop if cfg.INPUT.FORMAT == "RGB" else crop[..., ::-1]
    grid_image, stats = render(np.ascontiguousarray(rgb), coords[0].cpu().numpy(), attention,
                               model.head.token_grid(H, W), stride, threshold, args.areas, names,
                               meta.get("keypoint_connection_rules", []), args.cell_height, args.columns)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if not cv2.imwrite(args.output, grid_image[..., ::-1]):
        raise OSError(f"could not write {args.output}")
    layer = model.head.attention_layers[0]
    print(f"{what}: layer {layer} of {model.head.num_layers}, delta {threshold:g}, {attention.shape[0]} tokens "
          f"({model.head.token_grid(H, W)[0]} x {model.head.token_grid(H, W)[1]}, stride {stride})")
    _print_stats(stats, scores, names, args.areas)
    print(f"wrote {args.output} ({grid_image.shape[1]}x{grid_image.shape[0]})")
    return stats


@register_demo_drawing("TransPoseHead")
def demo_drawing(config_file: str, dataset: str, weights: str, output_dir: str, num: int, opts: Sequence[str]) -> None:
    """The training demo's drawing: the areas of the first person of `dataset` into
    output_dir/vis_dependency/<dataset>_0_0.png (`num` is not used: one person is drawn)."""
    areas = os.path.join(output_dir, "vis_dependency", f"{dataset}_0_0.png")
    main(["--config-file", config_file, "--dataset", dataset, "--output", areas, "--overwrite"] + list(opts)
         + ["MODEL.WEIGHTS", weights])
    print(f"TransPose's dependency and affected areas of the first person of {dataset}: {areas}")
