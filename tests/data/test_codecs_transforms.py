"""Tests of the top-down crop geometry and the keypoint codecs."""
import numpy as np
import pytest
import torch

from d2pose.data.codecs import MSRAHeatmap, RegressionCoords, UDPHeatmap
from d2pose.data.metadata import get_keypoint_metadata
from d2pose.data.transforms.affine import (
    apply_affine,
    box_to_center_size,
    crop_affine,
    flip_points,
    invert_affine,
    warp_image,
)
from tests.data.codec_checks import assert_encode_torch_equals_encode

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


@pytest.mark.parametrize("codec_cls", [MSRAHeatmap, UDPHeatmap])
def test_heatmap_encode_dark_decode_subpixel(codec_cls):
    codec = codec_cls((192, 256), (48, 64), sigma=2.0, unbiased=True, decode="dark")
    rng = np.random.default_rng(1)
    kps = rng.uniform(20, 170, size=(17, 2))
    hm, w = codec.encode(kps, np.full(17, 2))
    assert hm.shape == (17, 64, 48) and w.min() == 1
    coords, scores = codec.decode(torch.from_numpy(hm)[None].double())
    err = (coords[0].numpy() - kps)
    assert np.abs(err).max() < 0.05, np.abs(err).max()
    assert scores.min() > 0.9


def test_argmax_decode_within_quarter_cell():
    codec = MSRAHeatmap((192, 256), (48, 64), sigma=2.0, unbiased=False, decode="argmax")
    kps = np.array([[50.3, 80.9], [100.0, 100.0], [3.0, 250.0]])
    hm, w = codec.encode(kps, np.ones(3))
    coords, _ = codec.decode(torch.from_numpy(hm)[None])
    assert np.abs(coords[0].numpy() - kps).max() <= 4 * 0.75 + 1e-6  # within one stride


def test_encode_weights():
    codec = MSRAHeatmap((192, 256), (48, 64))
    hm, w = codec.encode(np.array([[50.0, 50.0], [-100.0, 50.0], [50.0, 50.0]]), np.array([2, 2, 0]))
    np.testing.assert_array_equal(w, [1, 0, 0])
    assert hm[1].max() == 0 and hm[2].max() == 0


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


@pytest.mark.parametrize("codec_cls", [MSRAHeatmap, UDPHeatmap])
def test_encode_torch_equals_numpy_encode(codec_cls):
    assert_encode_torch_equals_encode(codec_cls((72, 96), (18, 24), sigma=1.5, unbiased=True), (72, 96))


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("pixel_index", [False, True])
def test_regression_codec_round_trip_and_exact_flip(centered, pixel_index):
    W, H = 72, 96
    codec = RegressionCoords((W, H), centered=centered, pixel_index=pixel_index)
    rng = np.random.default_rng(0)
    kps = rng.uniform(1, 70, size=(17, 2))
    norm, w = codec.encode(kps, np.full(17, 2))
    assert w.all()
    torch.testing.assert_close(codec.decode(torch.as_tensor(norm, dtype=torch.float64)), torch.as_tensor(kps),
                               rtol=0, atol=1e-4)
    # the mirrored crop's keypoints (continuous: x -> W - x, labels swapped) flip back exactly
    mirrored = kps[FLIP].copy()
    mirrored[:, 0] = W - mirrored[:, 0]
    m_norm, _ = codec.encode(mirrored, np.full(17, 2))
    back = codec.flip_back(torch.as_tensor(m_norm, dtype=torch.float64)[None], FLIP)[0]
    torch.testing.assert_close(back, torch.as_tensor(norm, dtype=torch.float64), rtol=0, atol=1e-6)
    if pixel_index:  # pixel-index normalisation: x / W of the pixel index x - 0.5
        assert np.allclose(norm[:, 0] + (0.5 if centered else 0), (kps[:, 0] - 0.5) / W, atol=1e-6)


# ----------------------------------------------------------------------------- the codec contract

def test_codec_registry_builds_every_codec_from_the_config():
    from d2pose.config import get_d2pose_cfg
    from d2pose.data.codecs import CODEC_REGISTRY, BoxRelativeCoords, build_codec

    assert {"msra", "udp", "regression", "box_relative"} <= {name for name, _ in CODEC_REGISTRY}
    cfg = get_d2pose_cfg()
    for name, cls in (("msra", MSRAHeatmap), ("udp", UDPHeatmap), ("regression", RegressionCoords)):
        cfg.INPUT.TOPDOWN.CODEC = name
        codec = build_codec(cfg)
        assert type(codec) is cls and codec.name == name
    cfg.TEST.KEYPOINT_SCORE = "poseur"
    assert BoxRelativeCoords.from_config(cfg).score_form == "poseur"
    cfg.INPUT.TOPDOWN.CODEC = "simcc"
    with pytest.raises(ValueError, match="INPUT.TOPDOWN.CODEC"):
        build_codec(cfg)
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    cfg.TEST.KEYPOINT_SCORE = "max"
    with pytest.raises(ValueError, match="TEST.KEYPOINT_SCORE"):
        build_codec(cfg)


def test_a_head_refuses_a_codec_it_cannot_decode():
    from d2pose.config import get_d2pose_cfg
    from d2pose.modeling import build_model

    cfg = get_d2pose_cfg()
    cfg.merge_from_file("configs/RLE/synthetic_rle_topdown.yaml")
    cfg.INPUT.TOPDOWN.CODEC = "msra"
    with pytest.raises(ValueError, match=r"RLEIntegralHead.*INPUT.TOPDOWN.CODEC 'regression'.*'msra'"):
        build_model(cfg)
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    cfg.INPUT.PIPELINE = "bottomup"
    with pytest.raises(ValueError, match="INPUT.PIPELINE must be 'topdown'"):
        build_model(cfg)


@pytest.mark.parametrize("centered,pixel_index", [(False, False), (True, False), (True, True)])
def test_regression_grid_cells_decode_to_their_centres(centered, pixel_index):
    codec = RegressionCoords((48, 64), centered=centered, pixel_index=pixel_index)
    gx, gy = codec.grid(8, 6, stride=8)
    cells = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(1, -1, 2)
    xy = codec.decode(cells)[0]
    want_x = (torch.arange(6) + 0.5) * 8
    want_y = (torch.arange(8) + 0.5) * 8
    torch.testing.assert_close(xy[:6, 0], want_x)
    torch.testing.assert_close(xy[::6, 1], want_y)


def test_heatmap_grid_is_the_cells_crop_position():
    codec = MSRAHeatmap((192, 256), (48, 64))
    gx, gy = codec.grid(64, 48)
    torch.testing.assert_close(codec.to_pixels(torch.tensor([[3.0, 5.0]])), torch.stack([gx[3], gy[5]])[None])
    hm = torch.zeros(1, 2, 64, 48)
    hm[0, 0, 5, 3] = 0.7
    torch.testing.assert_close(codec.score(hm), torch.tensor([[0.7, 0.0]]))


def test_box_relative_codec_round_trip_weights_and_bins():
    from d2pose.data.codecs import BoxRelativeCoords

    codec = BoxRelativeCoords(score_form="rle")
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0]])
    kps = torch.tensor([[[60.0, 120.0, 2.0], [200.0, 30.0, 2.0], [20.0, 30.0, 0.0]]])
    target, weight = codec.encode(kps, boxes)
    torch.testing.assert_close(target[0, 0], torch.tensor([0.5, 0.5]))
    assert weight.tolist() == [[1.0, 0.0, 0.0]]  # outside the box; unlabelled
    torch.testing.assert_close(codec.decode(target, boxes), kps[..., :2])
    gx, gy = codec.grid(14, 14)
    torch.testing.assert_close(gx[[0, -1]], torch.tensor([0.5 / 14, 13.5 / 14]))
    torch.testing.assert_close(codec.score(torch.full((1, 3, 2), 0.25)), torch.full((1, 3), 0.75))
