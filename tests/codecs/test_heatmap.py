"""Tests of the heatmap codecs (d2pose.codecs.heatmap): encoding, DARK and arg-max decoding, weights,
the torch encoding and the soft-argmax grid."""
import numpy as np
import pytest
import torch

from d2pose.codecs import MSRAHeatmap, UDPHeatmap
from tests.codecs.codec_checks import assert_encode_torch_equals_encode


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


@pytest.mark.parametrize("codec_cls", [MSRAHeatmap, UDPHeatmap])
def test_encode_torch_equals_numpy_encode(codec_cls):
    assert_encode_torch_equals_encode(codec_cls((72, 96), (18, 24), sigma=1.5, unbiased=True), (72, 96))


def test_heatmap_grid_is_the_cells_crop_position():
    codec = MSRAHeatmap((192, 256), (48, 64))
    gx, gy = codec.grid(64, 48)
    torch.testing.assert_close(codec.to_pixels(torch.tensor([[3.0, 5.0]])), torch.stack([gx[3], gy[5]])[None])
    hm = torch.zeros(1, 2, 64, 48)
    hm[0, 0, 5, 3] = 0.7
    torch.testing.assert_close(codec.score(hm), torch.tensor([[0.7, 0.0]]))
