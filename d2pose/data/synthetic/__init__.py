"""Procedurally rendered synthetic multi-person keypoint dataset: d2pose's built-in benchmark.

Each image holds 1-4 people posed by a 3D kinematic skeleton (realistic limb proportions, joint
angles within human ranges: standing, walking, gesturing, crouching, sitting), turned to face the
camera, face away or stand in profile, rotated in the image plane by up to 30 degrees, projected
orthographically and drawn back to front with anti-aliased cv2 primitives over a textured
background, with random occluders and mild photometric noise. Clothing colours are shared by both
body sides, so left and right can only be told apart by cues that survive mirroring: the face
(eyes, nose, mouth) or the back of the head (hair), exactly as for real people.

Labels follow COCO person keypoints. A keypoint is labelled visible (v=2) when its pixel shows the
body part it belongs to, occluded (v=1) when another person, an occluder or the person's own body
covers it, and unlabelled (v=0, x=y=0) when it lies outside the image or on the far side of the
head (eyes and nose of people facing away, the far eye and ear in profile). bbox, area and the RLE
segmentation come from each person's visible rendered silhouette. Extra annotation fields:
``facing`` ("front", "back", "profile_left": the person's left side faces the camera and the nose
points to image left, "profile_right"), ``person_height`` (standing height in pixels) and ``pose``.

Coordinate convention:
    The renderer works in continuous image coordinates where pixel (column i, row j) covers
    [i, i+1) x [j, j+1) and has its centre at (i + 0.5, j + 0.5). cv2's sub-pixel drawing (the
    ``shift`` argument) puts pixel centres at integer coordinates, so every primitive is drawn at
    ``p - 0.5`` (the intensity centroid of an anti-aliased cv2 disc matches its centre to ~0.03 px).
    The json stores COCO's convention ``x_json = x_continuous - 0.5`` (Detectron2 adds 0.5 back when
    loading). bbox is in pixel-edge coordinates, as pycocotools computes it from the silhouette.

Modules: ``geometry`` (rotations, ellipsoid outlines), ``poses`` (joint angles, facing), ``people``
(bodies, their keypoints and shapes), ``drawing`` (canvas, backgrounds, occluders), ``samples`` (one
image and its annotations), ``dataset`` (generation on disk, named splits, annotation grids); the
dataset API is importable from this package.
"""
from .dataset import (SKELETON, SYNTHETIC_SPLITS, VERSION, SyntheticSplit, ensure_synthetic_split, generate_synthetic_pose,
                      render_sample_grid, synthetic_root, synthetic_split_paths)
from .people import KEYPOINT_NAMES

__all__ = ["KEYPOINT_NAMES", "SKELETON", "SYNTHETIC_SPLITS", "VERSION", "SyntheticSplit", "ensure_synthetic_split",
           "generate_synthetic_pose", "render_sample_grid", "synthetic_root", "synthetic_split_paths"]
