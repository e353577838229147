"""Flip-back of the top-down codecs: an ideal model gives the same keypoints on a crop and, flipped
back, on its mirror (UDP and regression exactly, MSRA with its sub-cell shift)."""
import numpy as np
import torch

from d2pose.codecs import MSRAHeatmap, RegressionCoords, UDPHeatmap
from d2pose.data.metadata import get_keypoint_metadata
from d2pose.data.transforms.affine import apply_affine, crop_affine, flip_points

FLIP = get_keypoint_metadata("coco_person").flip_indices


def _crop_keypoints(kps_image, flip):
    A = crop_affine([300.0, 200.0], [150.0, 200.0], (192, 256), rotation=10.0, flip=flip)
    return apply_affine(kps_image, A), A


def test_flip_test_with_identity_model_is_exact():
    """An ideal model (it outputs the encoded true keypoints of whatever crop it sees) gives the
    same result on the mirrored crop, after flip-back, as on the crop itself."""
    rng = np.random.default_rng(2)
    kps_image = np.stack([rng.uniform(270, 330, 17), rng.uniform(150, 250, 17)], -1)
    crop, _ = _crop_keypoints(kps_image, flip=False)
    # the mirrored crop's true keypoints: mirror, then swap labels (label k is now flip[k])
    crop_flip, _ = _crop_keypoints(kps_image, flip=True)
    crop_flip = crop_flip[FLIP]
    np.testing.assert_allclose(flip_points(crop_flip, FLIP, 192.0), crop, atol=1e-9)
    # UDP heatmaps: exact cell flip
    udp = UDPHeatmap((192, 256), (48, 64), sigma=2.0)
    h0, _ = udp.encode(crop, np.ones(17))
    h1, _ = udp.encode(crop_flip, np.ones(17))
    back = udp.flip_back(torch.from_numpy(h1)[None], FLIP)[0].numpy()
    np.testing.assert_allclose(back, h0, atol=1e-6)
    # MSRA: flip-back with the exact sub-cell shift decodes to the same keypoints
    msra = MSRAHeatmap((192, 256), (48, 64), sigma=2.0)
    h0, _ = msra.encode(crop, np.ones(17))
    h1, _ = msra.encode(crop_flip, np.ones(17))
    c0, _ = msra.decode(torch.from_numpy(h0)[None].double())
    c1, _ = msra.decode(msra.flip_back(torch.from_numpy(h1)[None].double(), FLIP))
    assert (c1 - c0).abs().max() < 0.05
    # without the shift (TransPose's official flip test) the average is biased by stride - 1 = 3 px
    c_none, _ = msra.decode(msra.flip_back(torch.from_numpy(h1)[None].double(), FLIP, shift="none"))
    np.testing.assert_allclose((c_none - c0)[..., 0].numpy(), -3.0, atol=0.05)
    # regression: exact
    for centered in (False, True):
        reg = RegressionCoords((192, 256), centered=centered)
        r0, _ = reg.encode(crop, np.ones(17))
        r1, _ = reg.encode(crop_flip, np.ones(17))
        torch.testing.assert_close(reg.flip_back(torch.from_numpy(r1)[None], FLIP)[0], torch.from_numpy(r0))
        torch.testing.assert_close(reg.decode(torch.from_numpy(r0).double()), torch.from_numpy(crop), atol=1e-5, rtol=0)
