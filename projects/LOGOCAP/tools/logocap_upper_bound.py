#!/usr/bin/env python
"""The empirical upper bound of a centre-offset method (LOGO-CAP supplementary Sec. 2), next to the
initial centre-offset poses and LOGO-CAP's adapted poses of the same model
(`d2pose_logocap.upper_bound`; --help for every option).

    # initial poses from a LOGO-CAP model (MODEL.LOGOCAP.ADAPTATION "none"), + the adapted ones
    python projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
        MODEL.WEIGHTS output/synthetic_logocap/model_final.pth
    # initial poses from a COCO keypoint results file (any centre-offset method)
    python projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
        --initial-poses initial.json --dataset synthetic_pose_val
"""
import d2pose  # noqa: F401  (registers every component)
from d2pose_logocap.upper_bound import main

if __name__ == "__main__":
    main()
