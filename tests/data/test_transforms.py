"""Tests of the affine crop geometry (d2pose.data.transforms.affine)."""
import numpy as np
import pytest

from d2pose.data.metadata import get_keypoint_metadata
from d2pose.data.transforms.affine import (
    apply_affine,
    box_to_center_size,
    crop_affine,
    flip_points,
    invert_affine,
    warp_image,
)

FLIP = get_keypoint_metadata("coco_person").flip_indices


def test_box_to_center_size_aspect_and_padding():
    c, s = box_to_center_size([10, 20, 110, 120], aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(c, [60, 70])
    np.testing.assert_allclose(s, [100 * 1.25, 100 / 0.75 * 1.25])
    c, s = box_to_center_size([0, 0, 300, 100], aspect_ratio=0.75)
    np.testing.assert_allclose(s / 1.25, [300, 400])


@pytest.mark.parametrize("rotation,flip", [(0, False), (30, False), (-45, True), (0, True)])
def test_crop_round_trip_exact(rotation, flip):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 640, size=(17, 2))
    A = crop_affine([320.3, 240.7], [150.0, 200.0], (192, 256), rotation=rotation, flip=flip)
    back = apply_affine(apply_affine(pts, A), invert_affine(A))
    assert np.abs(back - pts).max() < 1e-4
    # the centre goes to the crop centre, the region's corners to the crop's corners (no rotation)
    np.testing.assert_allclose(apply_affine(np.array([320.3, 240.7]), A), [96, 128], atol=1e-9)
    if rotation == 0 and not flip:
        np.testing.assert_allclose(apply_affine(np.array([320.3 - 75, 240.7 - 100]), A), [0, 0], atol=1e-9)


def test_warp_image_matches_point_mapping():
    # a bright pixel at image pixel (100, 60) (continuous centre (100.5, 60.5)) lands where the matrix says
    image = np.zeros((200, 300, 3), np.float32)
    image[60, 100] = 1.0
    A = crop_affine([110.0, 70.0], [48.0, 64.0], (96, 128), rotation=0.0)  # 2x zoom
    crop = warp_image(image, A, (96, 128))
    target = apply_affine(np.array([100.5, 60.5]), A)  # continuous crop coordinates
    ys, xs = np.nonzero(crop[..., 0] > 0)
    w = crop[ys, xs, 0]
    centroid = np.array([(xs + 0.5) @ w / w.sum(), (ys + 0.5) @ w / w.sum()])
    np.testing.assert_allclose(centroid, target, atol=1e-3)


def test_flip_points_swaps_left_right():
    pts = np.zeros((17, 3))
    pts[5] = [10.0, 5.0, 2]  # left_shoulder
    out = flip_points(pts, FLIP, width=100.0)
    np.testing.assert_allclose(out[6], [90.0, 5.0, 2])  # becomes right_shoulder, mirrored
    np.testing.assert_allclose(flip_points(out, FLIP, 100.0), pts)


def test_pixel_index_affine_conversions():
    from d2pose.data.transforms.affine import affine_from_pixel_index, affine_to_pixel_index

    A = crop_affine([110.0, 70.0], [48.0, 64.0], (96, 128), rotation=20.0)
    idx = affine_to_pixel_index(A)
    pts = np.array([[3.0, 4.0], [50.5, 20.25]])
    # the same map: M_idx(p - 0.5) = M(p) - 0.5
    np.testing.assert_allclose(apply_affine(pts - 0.5, idx), apply_affine(pts, A) - 0.5, atol=1e-12)
    np.testing.assert_allclose(affine_from_pixel_index(idx), A, atol=1e-12)
