#!/usr/bin/env python
"""Dependency and affected areas of a TransPose model's predicted keypoints (paper Sec. 3.3, Eq. 4,
Fig. 6), drawn by `d2pose_transpose.visualize` (--help for every option).

    python projects/TransPose/tools/visualize_dependency.py --config-file projects/TransPose/configs/synthetic_transpose_r.yaml \
        [--dataset synthetic_pose_val] [--image-index 0] [--person-index 0] \
        [--input IMAGE --box X0 Y0 X1 Y1] [--layer -1] [--threshold DELTA] [--areas dependency affected] \
        [--output output/dependency.jpg] [--overwrite] MODEL.WEIGHTS output/synthetic_transpose_r/model_final.pth
"""
import d2pose  # noqa: F401  (registers every component)
from d2pose_transpose.visualize import main

if __name__ == "__main__":
    main()
