#!/usr/bin/env python
"""Draw a keypoint dataset's annotations (and optionally a model's predictions) with Detectron2's
Visualizer.

    python tools/visualize_data.py --dataset synthetic_pose_val_mini --output-dir out/vis --num 16
    python tools/visualize_data.py --dataset coco_2017_val_pose \
        --predictions output/inference/coco_2017_val_pose/keypoints_results.json --output-dir out/vis

Predictions are COCO keypoint results (pixel-index coordinates, as written by KeypointEvaluator);
they are drawn next to the ground truth. Existing files in the output folder are not overwritten
unless --overwrite is given.
"""
import argparse
import json
import logging
import os
from collections import defaultdict

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

import d2pose  # noqa: F401  (registers the datasets)

logger = logging.getLogger("d2pose.visualize_data")


def load_predictions(path: str, score_thresh: float):
    """COCO keypoint results grouped by image id, in continuous coordinates (+0.5)."""
    with open(path) as f:
        results = json.load(f)
    by_image = defaultdict(list)
    for r in results:
        if r.get("score", 1.0) >= score_thresh:
            by_image[r["image_id"]].append(r)
    return by_image


def predictions_to_instances(results, image_size) -> Instances:
    inst = Instances(image_size)
    kps = np.array([r["keypoints"] for r in results], dtype=np.float32).reshape(len(results), -1, 3)
    kps[..., :2] += 0.5
    inst.pred_keypoints = torch.from_numpy(kps)
    inst.scores = torch.tensor([r.get("score", 1.0) for r in results], dtype=torch.float32)
    if results and all("bbox" in r for r in results):
        b = np.array([r["bbox"] for r in results], dtype=np.float32)
        b[:, 2:] += b[:, :2]
        inst.pred_boxes = Boxes(torch.from_numpy(b))
    return inst


def draw(record, metadata, predictions=None, scale=1.0) -> np.ndarray:
    """RGB drawing of one record's annotations, side by side with its predictions if given."""
    image = utils.read_image(record["file_name"], format="RGB")
    gt = Visualizer(image, metadata=metadata, scale=scale).draw_dataset_dict(record).get_image()
    if predictions is None:
        return gt
    inst = predictions_to_instances(predictions.get(record["image_id"], []), image.shape[:2])
    pred = Visualizer(image, metadata=metadata, scale=scale).draw_instance_predictions(inst).get_image()
    return np.concatenate([gt, pred], axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="registered dataset name")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--predictions", default="", help="COCO keypoint results json to draw beside the GT")
    parser.add_argument("--score-thresh", type=float, default=0.3)
    parser.add_argument("--num", type=int, default=16, help="images to draw (0 = all)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    setup_logger(name="d2pose")
    import cv2

    records = DatasetCatalog.get(args.dataset)
    metadata = MetadataCatalog.get(args.dataset)
    preds = load_predictions(args.predictions, args.score_thresh) if args.predictions else None
    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    for record in records[: args.num or None]:
        out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".jpg")
        if os.path.exists(out) and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        cv2.imwrite(out, draw(record, metadata, preds, args.scale)[:, :, ::-1])
        written.append(out)
    logger.info("wrote %d drawings to %s", len(written), args.output_dir)
    return written


if __name__ == "__main__":
    main()
