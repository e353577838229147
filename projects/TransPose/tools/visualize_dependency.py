#!/usr/bin/env python
"""Dependency and affected areas of a TransPose model's predicted keypoints (paper Sec. 3.3, Eq. 4,
Fig. 6), drawn by `d2pose_transpose.visualize` (--help for every option).

    python projects/TransPose/tools/visualize_dependency.py --config-file projects/TransPose/configs/synthetic_transpose_r.yaml \
        [--dataset synthetic_pose_val] [--image-index 0] [--person-index 0] \
        [--input IMAGE --box X0 Y0 X1 Y1] [--layer -1] [--threshold DELTA] [--areas dependency affected] \
        [--output output/dependency.jpg] [--overwrite] MODEL.WEIGHTS output/synthetic_transpose_r/model_final.pth

Config overrides: KEY VALUE pairs at the end, or anywhere after --opts (d2pose.engine.cli); after
--areas' names, give them after another option.
"""
import argparse
from typing import Dict, List, Optional

import d2pose  # noqa: F401  (registers every component)
from d2pose.engine.cli import overrides_last
from d2pose_transpose import visualize


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line alone (nothing drawn)."""
    return visualize.parse_args(overrides_last(argv))


def main(argv: Optional[List[str]] = None) -> Dict:
    """Draws as the command line says (`d2pose_transpose.visualize.main`)."""
    return visualize.main(overrides_last(argv))


if __name__ == "__main__":
    main()
