"""Tests of the regression codec (d2pose.codecs.regression): round trip, exact flip-back, grid."""
import numpy as np
import pytest
import torch

from d2pose.codecs import RegressionCoords
from d2pose.data.metadata import get_keypoint_metadata

FLIP = get_keypoint_metadata("coco_person").flip_indices


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
