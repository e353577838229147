#!/usr/bin/env python
"""Draw a keypoint dataset's annotations (and optionally a model's predictions) with Detectron2's
Visualizer (`d2pose.utils.visualizer.visualize_dataset`).

    python tools/visualize_data.py --dataset synthetic_pose_val_mini --output-dir out/vis --num 16
    python tools/visualize_data.py --dataset coco_2017_val_pose \
        --predictions output/inference/coco_2017_val_pose/keypoints_results.json --output-dir out/vis

Predictions are COCO keypoint results (pixel-index coordinates, as written by KeypointEvaluator);
they are drawn next to the ground truth, the panels captioned "ground truth" and "predictions". Existing files in the output folder are not overwritten
unless --overwrite is given.
"""
import argparse
from typing import List, Optional

from d2pose.utils.logger import setup_logger

import d2pose  # noqa: F401  (registers the datasets)
from d2pose.utils.visualizer import visualize_dataset


def main(argv: Optional[List[str]] = None) -> List[str]:
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
    return visualize_dataset(args.dataset, args.output_dir, args.num, args.predictions, args.score_thresh, args.scale,
                             args.overwrite)


if __name__ == "__main__":
    main()
