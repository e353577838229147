#!/usr/bin/env python
"""The empirical upper bound of a centre-offset method (LOGO-CAP supplementary Sec. 2), next to the
initial centre-offset poses and LOGO-CAP's adapted poses of the same model.

For every initial pose, each keypoint moves to the point of its keypoint expansion map (11 x 11
mesh, spacing sigma_k / min sigma network-input pixels) most similar (OKS) to the ground-truth person
the pose matches best: the best pose in the local window. Its AP bounds what a local search around
the centre-offset poses can reach.

    # initial poses from a LOGO-CAP model (MODEL.LOGOCAP.ADAPTATION "none"), + the adapted ones
    python tools/logocap_upper_bound.py --config-file configs/LOGOCAP/synthetic_logocap.yaml \
        MODEL.WEIGHTS output/synthetic_logocap/model_final.pth
    # initial poses from a COCO keypoint results file (any centre-offset method)
    python tools/logocap_upper_bound.py --config-file configs/LOGOCAP/synthetic_logocap.yaml \
        --initial-poses initial.json --dataset synthetic_pose_val

Prints one table (AP, AP50, AP75, AR per row) and writes it as json to --output (refused if it exists,
unless --overwrite).
"""
import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from typing import Dict, List

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

logger = logging.getLogger("d2pose.logocap_upper_bound")


def _instances(poses: np.ndarray, scores: np.ndarray, hw):
    from detectron2.structures import Boxes, Instances

    inst = Instances(hw)
    kps = torch.as_tensor(poses, dtype=torch.float32).reshape(len(poses), -1, 3)
    inst.pred_keypoints = kps
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    inst.pred_boxes = Boxes(torch.cat([kps[..., :2].amin(1), kps[..., :2].amax(1)], -1) if len(kps) else torch.zeros(0, 4))
    return inst


def _gt(record: Dict, K: int):
    anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0) and a.get("keypoints") is not None]
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, K, 3)
    areas = np.array([a.get("area") or a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64)
    return kps, areas


def evaluate(dataset: str, per_image: Dict[int, tuple], records: List[Dict], output_dir: str):
    from d2pose.evaluation import KeypointEvaluator

    ev = KeypointEvaluator(dataset, output_dir=output_dir, distributed=False)
    ev.reset()
    for r in records:
        poses, scores = per_image.get(r["image_id"], (np.zeros((0, 1, 3)), np.zeros(0)))
        ev.process([{"image_id": r["image_id"]}], [{"instances": _instances(poses, scores, (r["height"], r["width"]))}])
    return ev.evaluate()["keypoints"]


def model_poses(cfg, records, adaptation: str):
    """{image_id: (poses (P, K, 3) image coordinates, scores)} of the configured model."""
    from detectron2.checkpoint import DetectionCheckpointer
    from tqdm import tqdm

    from d2pose.data.bottomup import BottomUpDatasetMapper
    from d2pose.modeling import build_model

    from detectron2.data import MetadataCatalog

    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.adaptation = adaptation
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    mapper = BottomUpDatasetMapper(False, flip_indices=meta.keypoint_flip_indices,
                                   test_short_side=cfg.INPUT.BOTTOMUP.TEST_SHORT_SIDE, image_format=cfg.INPUT.FORMAT)
    out = {}
    with torch.no_grad():
        for r in tqdm(records, desc=f"LOGO-CAP ({adaptation})"):
            inst = model([mapper(r)])[0]["instances"]
            out[r["image_id"]] = (inst.pred_keypoints.numpy(), inst.scores.numpy())
    return out


def file_poses(path: str, K: int):
    with open(path) as f:
        results = json.load(f)
    per = defaultdict(lambda: ([], []))
    for r in results:
        per[r["image_id"]][0].append(np.asarray(r["keypoints"], dtype=np.float64).reshape(K, 3))
        per[r["image_id"]][1].append(float(r["score"]))
    # COCO results files hold pixel-index coordinates: d2pose's continuous ones are +0.5
    return {k: (np.stack(p) + np.array([0.5, 0.5, 0.0]), np.asarray(s)) for k, (p, s) in per.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default="", help="dataset name (default: the config's DATASETS.TEST[0])")
    p.add_argument("--initial-poses", default="", help="COCO keypoint results json of initial poses (else the model's)")
    p.add_argument("--max-images", type=int, default=0, help="evaluate on the first N images only (0 = all)")
    p.add_argument("--output", default="", help="json file for the table (default: OUTPUT_DIR/logocap_upper_bound.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    import d2pose  # noqa: F401
    from d2pose.config import get_d2pose_cfg
    from d2pose_logocap import upper_bound_poses

    setup_logger(name="d2pose")
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    cfg.DATASETS.TEST = (dataset,)
    out_path = args.output or os.path.join(cfg.OUTPUT_DIR, "logocap_upper_bound.json")
    if os.path.exists(out_path) and not args.overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    meta = MetadataCatalog.get(dataset)
    sigmas = list(meta.keypoint_oks_sigmas)
    K = len(sigmas)
    records = DatasetCatalog.get(dataset)
    if args.max_images:
        records = records[:args.max_images]
    if args.initial_poses:
        initial = file_poses(args.initial_poses, K)
        adapted = None
    else:
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("MODEL.WEIGHTS: give the model's weights (or --initial-poses)")
        initial = model_poses(cfg, records, "none")
        adapted = model_poses(cfg, records, "full")
    short = cfg.INPUT.BOTTOMUP.TEST_SHORT_SIDE
    bound = {}
    for r in records:
        poses, scores = initial.get(r["image_id"], (np.zeros((0, K, 3)), np.zeros(0)))
        gt, areas = _gt(r, K)
        step = min(r["height"], r["width"]) / short  # image pixels per network-input pixel
        bound[r["image_id"]] = (upper_bound_poses(poses, gt, areas, sigmas, step, cfg.MODEL.LOGOCAP.KEM_SIZE), scores)
    work = os.path.join(os.path.dirname(out_path) or ".", "logocap_upper_bound_eval")
    rows = {"initial centre-offset poses": evaluate(dataset, initial, records, work),
            "upper bound (best pose in the 11x11 KEM window)": evaluate(dataset, bound, records, work)}
    if adapted is not None:
        rows["LOGO-CAP (local-global adaptation)"] = evaluate(dataset, adapted, records, work)
    print(f"\n{dataset}: {len(records)} images")
    print(f"| {'poses':50s} | AP    | AP50  | AP75  | AR    |")
    print(f"|{'-' * 52}|-------|-------|-------|-------|")
    for name, m in rows.items():
        print(f"| {name:50s} | {m['AP']:5.1f} | {m['AP50']:5.1f} | {m['AP75']:5.1f} | {m['AR']:5.1f} |")
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        json.dump({"dataset": dataset, "images": len(records), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
