"""The empirical upper bound of a centre-offset pose estimator (LOGO-CAP supplementary Sec. 2).

Each initial pose is expanded into its keypoint expansion maps (S x S meshes, spacing
sigma_k / min sigma network-input pixels); the OKS similarities of every mesh point with every
ground-truth person are summed over the mesh and the keypoints to match the pose to one person, and
each keypoint then moves to its mesh point of highest similarity with that person: the best pose in
the local window. A perfect KAM would find it; its AP bounds what the local search can give.

The targets' ceiling is the AP of a model whose heads equal its training targets: each image's ground
truth, scaled to the test input (short side INPUT.BOTTOMUP.TEST_SHORT_SIDE), encoded by
`bottomup_targets` with the small-person rule (INPUT.BOTTOMUP.MIN_CENTER_AREA, source-image areas)
and decoded by `decode_center_offsets` on the output grid (no pose NMS, no MAX_PEOPLE): it shows what
the targets themselves lose (people under the rule, centres that share a cell or a peak).

`main` (the command line, projects/LOGOCAP/tools/logocap_upper_bound.py) evaluates, in one table, the
targets' ceiling, the upper bound of the model's initial poses and the model's poses with
MODEL.LOGOCAP.ADAPTATION "none" (the initial centre-offset poses), "partial" (each keypoint at its
KAM's maximum on the KEM) and "full" (LOGO-CAP), the model built and loaded once:

    # a LOGO-CAP model: ceiling, upper bound, ADAPTATION none / partial / full
    python projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
        MODEL.WEIGHTS output/synthetic_logocap/model_final.pth
    # initial poses from a COCO keypoint results file (any centre-offset method): ceiling, upper
    # bound, initial poses
    python projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
        --initial-poses initial.json --dataset synthetic_pose_val

It prints one table (AP, AP50, AP75, AR per row) and writes it as json to --output (refused if it
exists, unless --overwrite).

Shape shorthand: P poses, G ground-truth people, K keypoints.
"""
import argparse
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from d2pose.utils.logger import setup_logger
from tqdm import tqdm

from d2pose.codecs.center_offset import bottomup_targets, decode_center_offsets
from d2pose.config import get_d2pose_cfg
from d2pose.data.bottomup_mapper import BottomUpDatasetMapper
from d2pose.data.build import min_center_area
from d2pose.evaluation import KeypointEvaluator
from d2pose.evaluation.coco_results import coco_results_keypoints, load_coco_results
from d2pose.modeling import build_model
from d2pose.modeling.keypoint_sampling import keypoint_expansion

from .meta_arch import mesh_oks

__all__ = ["upper_bound_poses", "ceiling_image_poses", "ceiling_poses", "poses_to_instances",
           "gt_people", "evaluate_poses", "load_model", "model_poses", "file_poses", "bound_poses", "upper_bound_rows",
           "print_table", "ROW_NAMES", "main"]

#: {image id: (poses (P, K, 3) image coordinates, scores (P,))}
PosesByImage = Dict[int, Tuple[np.ndarray, np.ndarray]]

#: the table's rows, in order ("bound" names the KEM size: format it with kem_size)
ROW_NAMES = {"ceiling": "targets' ceiling (perfect heads, test scale)",
             "bound": "upper bound (best pose in the {kem_size}x{kem_size} KEM window)",
             "none": "ADAPTATION none (initial centre-offset poses)",
             "partial": "ADAPTATION partial (KAM on the KEM)",
             "full": "ADAPTATION full (LOGO-CAP)",
             "file": "initial poses (--initial-poses file)"}

#: the centre-map value of a person's own peak is >= exp(-0.5 / 32) (the centre Gaussian, sigma 4
#: cells, at its nearest cell): `ceiling_image_poses` keeps the peaks above this
CENTER_PEAK = 0.9


def upper_bound_poses(poses: np.ndarray, gt_keypoints: np.ndarray, gt_areas: np.ndarray, sigmas: Sequence[float],
                      mesh_step: float = 1.0, kem_size: int = 11) -> np.ndarray:
    """Best poses in the keypoint expansion maps of `poses`.

    Args:
        poses: (P, K, 2+) initial poses (image coordinates; extra columns, e.g. scores, are kept).
        gt_keypoints: (G, K, 3) ground truth of the same image (x, y, visibility).
        gt_areas: (G,) ground-truth areas (image pixels).
        sigmas: (K,) OKS sigmas.
        mesh_step: image pixels per network-input pixel (1 / the test resize scale), so that the
            mesh spacing is the model's.
    Returns:
        (P, K, 2+) poses whose keypoints are the matched person's best mesh points (a keypoint the
        person has no label for stays where it was).
    """
    poses = np.asarray(poses, dtype=np.float64)
    out = poses.copy()
    if len(poses) == 0 or len(gt_keypoints) == 0:
        return out
    gt = torch.as_tensor(np.asarray(gt_keypoints, dtype=np.float64))
    areas = torch.as_tensor(np.asarray(gt_areas, dtype=np.float64))
    sig = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
    p = torch.as_tensor(poses[..., :2])
    meshes = p[:, None, None] + (keypoint_expansion(torch.zeros_like(p), sigmas, kem_size) * mesh_step)
    parts, _, _ = mesh_oks(meshes, gt, areas, sig)  # (P, S, S, G, K)
    match = parts.sum(dim=(1, 2, 4)).argmax(-1)  # (P,): the person with the largest summed similarity
    idx = torch.arange(len(poses))
    chosen = parts[idx, :, :, match]  # (P, S, S, K)
    P, S, _, K = chosen.shape
    best = chosen.reshape(P, S * S, K).argmax(1)  # (P, K)
    cells = meshes.reshape(P, S * S, K, 2)
    xy = torch.gather(cells, 1, best[:, None, :, None].expand(P, 1, K, 2))[:, 0]
    labelled = (gt[match][..., 2] > 0).numpy()
    out[..., :2] = np.where(labelled[..., None], xy.numpy(), poses[..., :2])
    return out


def poses_to_instances(poses: np.ndarray, scores: np.ndarray, hw: Tuple[int, int]) -> Instances:
    """`Instances` of P poses (P, K, 3) with their scores and boxes around the keypoints."""
    inst = Instances(hw)
    kps = torch.as_tensor(poses, dtype=torch.float32)
    kps = kps if kps.dim() == 3 else kps.reshape(len(poses), -1, 3)  # (0, K, 3) stays: no reshape of 0 elements
    inst.pred_keypoints = kps
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    inst.pred_boxes = Boxes(torch.cat([kps[..., :2].amin(1), kps[..., :2].amax(1)], -1) if len(kps) else torch.zeros(0, 4))
    return inst


def gt_people(record: Dict, K: int) -> Tuple[np.ndarray, np.ndarray]:
    """(keypoints (G, K, 3), areas (G,)) of a dataset record's non-crowd people with keypoints."""
    anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0) and a.get("keypoints") is not None]
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, K, 3)
    areas = np.array([a.get("area") or a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64)
    return kps, areas


def evaluate_poses(dataset: str, per_image: PosesByImage, records: List[Dict], output_dir: str) -> Dict[str, float]:
    """KeypointEvaluator's "keypoints" metrics (AP, AP50, ...) of the poses of `records`."""
    ev = KeypointEvaluator(dataset, output_dir=output_dir, distributed=False)
    ev.reset()
    for r in records:
        poses, scores = per_image.get(r["image_id"], (np.zeros((0, 1, 3)), np.zeros(0)))
        ev.process([{"image_id": r["image_id"]}],
                   [{"instances": poses_to_instances(poses, scores, (r["height"], r["width"]))}])
    return ev.evaluate()["keypoints"]


def ceiling_image_poses(record: Dict, K: int, short_side: int, stride: int,
                        min_area: float) -> Tuple[np.ndarray, np.ndarray]:
    """The poses a model whose heads equal the training targets decodes on one image.

    The people are scaled to the test input (short side `short_side`: scale s = short_side /
    min(H, W)), encoded by `bottomup_targets` on the (ceil(W s / stride), ceil(H s / stride)) grid
    (the rule reads the source-image areas) and decoded on the grid; each centre peak above
    CENTER_PEAK gives one pose (identical poses once), mapped back to the image (/ s).

    Returns:
        poses (P, K, 3) continuous image coordinates (third column: the score), scores (P,): the
        centre values.
    """
    gt, areas = gt_people(record, K)
    if len(gt) == 0:
        return np.zeros((0, K, 3)), np.zeros(0)
    H, W = record["height"], record["width"]
    s = short_side / min(H, W)
    kps = gt.copy()
    kps[..., :2] *= s
    grid = (math.ceil(W * s / stride), math.ceil(H * s / stride))
    t = bottomup_targets(kps, areas * s ** 2, grid, stride=stride, min_area=min_area, rule_areas=areas)
    centermap = torch.as_tensor(t["heatmaps"][K])[None, None]
    # at most 4 tied peak cells per person (a centre on a cell corner)
    centers, poses = decode_center_offsets(centermap, torch.as_tensor(t["offsets"])[None], stride,
                                           topk=4 * len(gt) + 8)
    keep = centers[0, :, 2] > CENTER_PEAK
    scores, poses = centers[0, keep, 2].double().numpy(), poses[0, keep].double().numpy() / s
    unique = ~np.tril(np.abs(poses[:, None] - poses[None]).max((2, 3)) < 1e-3, -1).any(1)
    scores, poses = scores[unique], poses[unique]
    return np.concatenate([poses, np.repeat(scores[:, None, None], K, 1)], -1), scores


def ceiling_poses(records: List[Dict], K: int, short_side: int, stride: int, min_area: float) -> PosesByImage:
    """`ceiling_image_poses` of every record: the targets' ceiling at the test scale."""
    return {r["image_id"]: ceiling_image_poses(r, K, short_side, stride, min_area) for r in records}


def load_model(cfg: CfgNode) -> Tuple[torch.nn.Module, BottomUpDatasetMapper]:
    """The configured LOGO-CAP model (MODEL.WEIGHTS loaded, eval mode) and its test mapper."""
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    mapper = BottomUpDatasetMapper(False, flip_indices=meta.keypoint_flip_indices,
                                   test_short_side=cfg.INPUT.BOTTOMUP.TEST_SHORT_SIDE, image_format=cfg.INPUT.FORMAT)
    return model, mapper


def model_poses(model: torch.nn.Module, mapper: BottomUpDatasetMapper, records: List[Dict],
                adaptation: str) -> PosesByImage:
    """The poses of a LOGO-CAP `model` (`load_model`) on `records`, with MODEL.LOGOCAP.ADAPTATION
    `adaptation` ("none": the initial centre-offset poses; "partial": KAM on the KEM; "full":
    LOGO-CAP's); the model's own adaptation is restored afterwards."""
    if adaptation not in ("none", "partial", "full"):
        raise ValueError(f"adaptation must be 'none', 'partial' or 'full', got {adaptation!r}")
    previous, model.adaptation = model.adaptation, adaptation
    out = {}
    try:
        with torch.no_grad():
            for r in tqdm(records, desc=f"LOGO-CAP ({adaptation})"):
                inst = model([mapper(r)])[0]["instances"]
                out[r["image_id"]] = (inst.pred_keypoints.numpy(), inst.scores.numpy())
    finally:
        model.adaptation = previous
    return out


def file_poses(path: str, K: int) -> PosesByImage:
    """The poses of a COCO keypoint results json, in continuous coordinates (float64)."""
    return {k: (coco_results_keypoints(results, np.float64).reshape(-1, K, 3),
                np.asarray([float(r["score"]) for r in results]))
            for k, results in load_coco_results(path).items()}


def bound_poses(cfg: CfgNode, dataset: str, records: List[Dict], initial: PosesByImage) -> PosesByImage:
    """`upper_bound_poses` of the `initial` poses of every record (the model's KEM size and mesh step)."""
    sigmas = list(MetadataCatalog.get(dataset).keypoint_oks_sigmas)
    K = len(sigmas)
    short = cfg.INPUT.BOTTOMUP.TEST_SHORT_SIDE
    bound = {}
    for r in records:
        poses, scores = initial.get(r["image_id"], (np.zeros((0, K, 3)), np.zeros(0)))
        gt, areas = gt_people(r, K)
        step = min(r["height"], r["width"]) / short  # image pixels per network-input pixel
        bound[r["image_id"]] = (upper_bound_poses(poses, gt, areas, sigmas, step, cfg.MODEL.LOGOCAP.KEM_SIZE), scores)
    return bound


def upper_bound_rows(cfg: CfgNode, dataset: str, records: List[Dict], initial: PosesByImage,
                     adapted: Optional[Mapping[str, PosesByImage]], work_dir: str,
                     initial_row: str = ROW_NAMES["none"]) -> Dict[str, Dict[str, float]]:
    """{row name (ROW_NAMES): metrics}, in order: the targets' ceiling, the upper bound of the
    `initial` poses, the initial poses (row `initial_row`) and the `adapted` ones ({"partial" or
    "full": poses}, when given)."""
    K = len(MetadataCatalog.get(dataset).keypoint_oks_sigmas)
    b = cfg.INPUT.BOTTOMUP
    ceiling = ceiling_poses(records, K, b.TEST_SHORT_SIDE, b.STRIDE, min_center_area(cfg))
    bound_row = ROW_NAMES["bound"].format(kem_size=cfg.MODEL.LOGOCAP.KEM_SIZE)
    rows = {ROW_NAMES["ceiling"]: evaluate_poses(dataset, ceiling, records, work_dir),
            bound_row: evaluate_poses(dataset, bound_poses(cfg, dataset, records, initial), records, work_dir),
            initial_row: evaluate_poses(dataset, initial, records, work_dir)}
    for adaptation, poses in (adapted or {}).items():
        rows[ROW_NAMES[adaptation]] = evaluate_poses(dataset, poses, records, work_dir)
    return rows


def print_table(dataset: str, images: int, rows: Mapping[str, Mapping[str, float]]) -> None:
    """The rows as a markdown table (AP, AP50, AP75, AR)."""
    width = max([len("poses")] + [len(name) for name in rows])
    print(f"\n{dataset}: {images} images")
    print(f"| {'poses':{width}s} | AP    | AP50  | AP75  | AR    |")
    print(f"|{'-' * (width + 2)}|-------|-------|-------|-------|")
    for name, m in rows.items():
        print(f"| {name:{width}s} | {m['AP']:5.1f} | {m['AP50']:5.1f} | {m['AP75']:5.1f} | {m['AR']:5.1f} |")


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default="", help="dataset name (default: the config's DATASETS.TEST[0])")
    p.add_argument("--initial-poses", default="", help="COCO keypoint results json of initial poses (else the model's)")
    p.add_argument("--max-images", type=int, default=0, help="evaluate on the first N images only (0 = all)")
    p.add_argument("--output", default="", help="json file for the table (default: OUTPUT_DIR/logocap_upper_bound.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    """The command line (see the module docstring); returns the table's rows."""
    args = _parse_args(argv)
    setup_logger(name="d2pose")
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    cfg.DATASETS.TEST = (dataset,)
    out_path = args.output or os.path.join(cfg.OUTPUT_DIR, "logocap_upper_bound.json")
    if os.path.exists(out_path) and not args.overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    records = DatasetCatalog.get(dataset)
    if args.max_images:
        records = records[:args.max_images]
    K = len(MetadataCatalog.get(dataset).keypoint_oks_sigmas)
    if args.initial_poses:
        initial, adapted, initial_row = file_poses(args.initial_poses, K), None, ROW_NAMES["file"]
    else:
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("MODEL.WEIGHTS: give the model's weights (or --initial-poses)")
        model, mapper = load_model(cfg)
        initial, initial_row = model_poses(model, mapper, records, "none"), ROW_NAMES["none"]
        adapted = {a: model_poses(model, mapper, records, a) for a in ("partial", "full")}
    work = os.path.join(os.path.dirname(out_path) or ".", "logocap_upper_bound_eval")
    rows = upper_bound_rows(cfg, dataset, records, initial, adapted, work, initial_row)
    print_table(dataset, len(records), rows)
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        json.dump({"dataset": dataset, "images": len(records), "min_center_area": min_center_area(cfg), "rows": rows},
                  f, indent=1)
    return rows
