"""d2pose.structures.keypoints: the one pairwise OKS, against values computed by hand."""
import math

import numpy as np
import pytest
import torch

from d2pose.structures import keypoint_similarities, masked_keypoint_mean, pairwise_oks
from d2pose.structures.keypoints import COCO_EPS

SIGMAS = np.array([0.1, 0.2])


def _poses():
    """a: one pose at the origin; b: the same pose, and one whose keypoint 1 is 5 px away (3-4-5)."""
    a = np.zeros((1, 2, 3))
    a[..., 2] = 1.0
    b = np.zeros((2, 2, 3))
    b[..., 2] = 1.0
    b[1, 1, :2] = (3.0, 4.0)
    return a, b


def test_coco_convention_by_hand():
    a, b = _poses()
    sims = keypoint_similarities(a, b, SIGMAS, np.array([100.0, 100.0]))
    # keypoint 1 of pair (0, 1): exp(-25 / (2 * (2 * 0.2)^2 * (100 + eps))) = exp(-25 / 32)
    assert sims.shape == (1, 2, 2)
    assert sims[0, 0].tolist() == [1.0, 1.0] and sims[0, 1, 0] == 1.0
    assert sims[0, 1, 1] == pytest.approx(math.exp(-25.0 / 32.0), rel=1e-15)
    oks, counts = pairwise_oks(a, b, SIGMAS, np.array([100.0, 100.0]))
    assert oks[0].tolist() == pytest.approx([1.0, (1.0 + math.exp(-25.0 / 32.0)) / 2], rel=1e-15)
    assert counts.tolist() == [[2, 2]]


def test_conventions_are_parameters():
    a, b = _poses()
    scales = np.array([[100.0, 50.0]])  # a pairwise scale, (A, B)
    # sigmas already scaled (f = 1), no eps: exp(-25 / (2 * 0.2^2 * 50)) = exp(-6.25)
    sims = keypoint_similarities(a, b, SIGMAS, scales, sigma_factor=1.0, eps=0.0)
    assert sims[0, 1, 1] == pytest.approx(math.exp(-6.25), rel=1e-15)
    # a zero scale: COCO's eps keeps a finite exponent, min_denominator bounds it instead
    zero = np.zeros(2)
    assert keypoint_similarities(a, b, SIGMAS, zero)[0, 1, 1] == 0.0
    bounded = keypoint_similarities(a, b, SIGMAS, zero, eps=0.0, min_denominator=1000.0)
    assert bounded[0, 1, 1] == pytest.approx(math.exp(-25.0 / 1000.0), rel=1e-15)
    assert keypoint_similarities(a, b, SIGMAS, zero, eps=COCO_EPS)[0, 0, 1] == 1.0  # 0 / tiny


def test_valid_keypoints_and_empty_pairs():
    a, b = _poses()
    valid = np.array([[[True, True], [True, False]]])  # pair (0, 1) without its moved keypoint
    oks, counts = pairwise_oks(a, b, SIGMAS, np.array([100.0, 100.0]), valid)
    assert oks.tolist() == [[1.0, 1.0]] and counts.tolist() == [[2, 1]]
    none = np.zeros((1, 2, 2), dtype=bool)
    oks, counts = pairwise_oks(a, b, SIGMAS, np.array([100.0, 100.0]), none)
    assert oks.tolist() == [[0.0, 0.0]] and counts.tolist() == [[0, 0]]
    mean, n = masked_keypoint_mean(np.array([[0.5, 1.0, 0.25]]), np.array([True, False, True]))
    assert mean.tolist() == [0.375] and int(n) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 50, (3, 5, 3)), rng.uniform(0, 50, (4, 5, 3))
    sigmas, areas = rng.uniform(0.02, 0.1, 5), rng.uniform(100, 900, 4)
    valid = (a[:, None, :, 2] > 10) & (b[None, :, :, 2] > 10)
    want, want_counts = pairwise_oks(a, b, sigmas, areas, valid)
    t = [torch.as_tensor(x, dtype=dtype) for x in (a, b, sigmas, areas)]
    got, counts = pairwise_oks(*t, torch.as_tensor(valid))
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.shape == (3, 4)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    assert counts.tolist() == want_counts.tolist()
