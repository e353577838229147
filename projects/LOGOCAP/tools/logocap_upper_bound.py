#!/usr/bin/env python
"""One table for a LOGO-CAP config and weights (`d2pose_logocap.upper_bound`; --help for every
option): the targets' ceiling (heads equal to the training targets, decoded at the test scale, the
small-person rule INPUT.BOTTOMUP.MIN_CENTER_AREA applied), the empirical upper bound of the initial
centre-offset poses (the best pose in the KEM window, LOGO-CAP supplementary Sec. 2) and the AP of
MODEL.LOGOCAP.ADAPTATION "none" (initial poses), "partial" (KAM on the KEM) and "full" (LOGO-CAP),
the model built and loaded once.

    # a LOGO-CAP model: ceiling, upper bound, ADAPTATION none / partial / full
    python projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
        MODEL.WEIGHTS output/synthetic_logocap/model_final.pth
    # initial poses from a COCO keypoint results file (any centre-offset method): ceiling, upper
    # bound, initial poses
    python projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
        --initial-poses initial.json --dataset synthetic_pose_val

Config overrides: KEY VALUE pairs at the end, or anywhere after --opts (d2pose.engine.cli).
"""
from typing import Dict, List, Optional

import d2pose  # noqa: F401  (registers every component)
from d2pose.engine.cli import overrides_last
from d2pose_logocap import upper_bound


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    """The table as the command line says (`d2pose_logocap.upper_bound.main`)."""
    return upper_bound.main(overrides_last(argv))


if __name__ == "__main__":
    main()
