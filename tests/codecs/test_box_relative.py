"""Tests of the box-relative codec of the ROI heads (d2pose.codecs.box_relative)."""
import pytest
import torch

from d2pose.codecs import BoxRelativeCoords


def test_box_relative_codec_round_trip_weights_and_bins():
    codec = BoxRelativeCoords(score_form="rle")
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0]])
    kps = torch.tensor([[[60.0, 120.0, 2.0], [200.0, 30.0, 2.0], [20.0, 30.0, 0.0]]])
    target, weight = codec.encode(kps[..., :2], kps[..., 2], boxes=boxes)
    torch.testing.assert_close(target[0, 0], torch.tensor([0.5, 0.5]))
    assert weight.tolist() == [[1.0, 0.0, 0.0]]  # outside the box; unlabelled
    torch.testing.assert_close(codec.decode(target, boxes=boxes), kps[..., :2])
    gx, gy = codec.grid(14, 14)
    torch.testing.assert_close(gx[[0, -1]], torch.tensor([0.5 / 14, 13.5 / 14]))
    torch.testing.assert_close(codec.score(torch.full((1, 3, 2), 0.25)), torch.full((1, 3), 0.75))


def test_box_relative_margin_supervises_keypoints_near_the_box():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    kps = torch.tensor([[[120.0, 50.0], [160.0, 50.0]]])  # 0.2 and 0.6 box widths outside
    vis = torch.full((1, 2), 2.0)
    assert BoxRelativeCoords().encode(kps, vis, boxes=boxes)[1].tolist() == [[0.0, 0.0]]
    assert BoxRelativeCoords(margin=0.25).encode(kps, vis, boxes=boxes)[1].tolist() == [[1.0, 0.0]]


def test_box_relative_needs_boxes():
    codec = BoxRelativeCoords()
    with pytest.raises(ValueError, match="boxes"):
        codec.encode(torch.zeros(1, 2, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="boxes"):
        codec.decode(torch.zeros(1, 2, 2))
