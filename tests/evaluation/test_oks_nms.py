"""OKS, OKS-NMS, soft-OKS-NMS and instance rescoring: hand-computed values and suppression behaviour."""
import math

import numpy as np
import pytest
import torch

from d2pose.evaluation import oks_iou, oks_nms, rescore_instances, soft_oks_nms

SIGMAS = np.array([0.1, 0.2])


def _pose(points, score=1.0):
    return np.array([[x, y, score] for x, y in points], dtype=np.float64)


REF = _pose([(0, 0), (10, 0)])
# first keypoint 5 px away (3-4-5), second one identical
OTHER = _pose([(3, 4), (10, 0)])


def test_oks_hand_computed():
    # s^2 = (100 + 100) / 2, k = 2 * 0.1: e = 25 / 0.04 / 100 / 2 = 3.125
    expected = (math.exp(-3.125) + 1.0) / 2
    np.testing.assert_allclose(oks_iou(REF, OTHER[None], 100.0, [100.0], SIGMAS), [expected], rtol=1e-9)
    # areas averaged: s^2 = 200 -> e = 1.5625
    np.testing.assert_allclose(oks_iou(REF, OTHER[None], 100.0, [300.0], SIGMAS), [(math.exp(-1.5625) + 1) / 2])
    np.testing.assert_allclose(oks_iou(REF, REF[None], 50.0, [50.0], SIGMAS), [1.0])
    assert oks_iou(REF[:, :2], OTHER[None, :, :2], 100.0, [100.0], SIGMAS)[0] == pytest.approx(expected)


def test_oks_vis_thresh_uses_reference_keypoints():
    ref = REF.copy()
    ref[1, 2] = 0.1  # the identical keypoint is not confident in the reference pose
    np.testing.assert_allclose(oks_iou(ref, OTHER[None], 100.0, [100.0], SIGMAS, vis_thresh=0.5), [math.exp(-3.125)])
    ref[:, 2] = 0.0
    assert oks_iou(ref, OTHER[None], 100.0, [100.0], SIGMAS, vis_thresh=0.5)[0] == 0.0
    assert oks_iou(REF, np.zeros((0, 2, 3)), 100.0, np.zeros(0), SIGMAS).shape == (0,)
    with pytest.raises(ValueError):
        oks_iou(REF, OTHER[None], 100.0, [100.0], [0.1, 0.2, 0.3])


def _people():
    """A person, a near-duplicate of it, and a distinct person; scores 0.9, 0.8, 0.7."""
    a = _pose([(100, 100), (120, 100), (110, 140)])
    dup = a + np.array([1.0, -1.0, 0.0])
    b = _pose([(300, 100), (320, 100), (310, 140)])
    kpts = np.stack([a, dup, b])
    return kpts, np.array([0.9, 0.8, 0.7]), np.full(3, 2000.0), np.array([0.079, 0.079, 0.107])


def test_oks_nms_suppresses_duplicates_keeps_distinct_people():
    kpts, scores, areas, sigmas = _people()
    keep = oks_nms(kpts, scores, areas, sigmas, thresh=0.9)
    assert isinstance(keep, np.ndarray) and keep.dtype == np.int64
    assert keep.tolist() == [0, 2]
    # the order follows the scores, not the input order
    assert oks_nms(kpts, scores[::-1].copy(), areas, sigmas).tolist() == [2, 1]
    # a threshold above the duplicate's OKS keeps everyone
    oks_dup = oks_iou(kpts[0], kpts[1:2], 2000.0, [2000.0], sigmas)[0]
    assert 0.9 < oks_dup < 1.0
    assert oks_nms(kpts, scores, areas, sigmas, thresh=min(0.999, oks_dup + 1e-3)).tolist() == [0, 1, 2]
    keep_t = oks_nms(torch.from_numpy(kpts).float(), torch.from_numpy(scores), torch.from_numpy(areas), sigmas)
    assert keep_t.dtype == torch.long and keep_t.tolist() == [0, 2]
    assert oks_nms(np.zeros((0, 3, 3)), np.zeros(0), np.zeros(0), sigmas).tolist() == []


def test_soft_oks_nms_rescoring():
    kpts, scores, areas, sigmas = _people()
    oks_dup = oks_iou(kpts[0], kpts[1:2], 2000.0, [2000.0], sigmas)[0]
    keep, new_scores = soft_oks_nms(kpts, scores, areas, sigmas, thresh=0.3)
    # the duplicate decays below the distinct person: exp(-oks^2 / 0.3) * 0.8
    assert keep.tolist() == [0, 2, 1]
    dup_score = 0.8 * math.exp(-oks_dup ** 2 / 0.3)
    oks_b = oks_iou(kpts[2], kpts[1:2], 2000.0, [2000.0], sigmas)[0]
    np.testing.assert_allclose(new_scores, [0.9, 0.7, dup_score * math.exp(-oks_b ** 2 / 0.3)], rtol=1e-12)
    assert np.all(np.diff(new_scores) <= 0)  # kept in non-increasing rescored order
    assert np.all(new_scores <= scores[keep] + 1e-12)  # decay never raises a score
    keep2, _ = soft_oks_nms(kpts, scores, areas, sigmas, max_dets=2)
    assert keep2.tolist() == [0, 2]
    keep_lin, scores_lin = soft_oks_nms(kpts, scores, areas, sigmas, thresh=0.3, method="linear")
    assert keep_lin.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores_lin[2], 0.8 * (1 - oks_dup), rtol=1e-12)
    # a larger overlap decays more: monotone in OKS
    far = kpts.copy()
    far[1, :, :2] += 3.0
    _, s_far = soft_oks_nms(far, scores, areas, sigmas)
    assert s_far[2] > new_scores[2]
    with pytest.raises(ValueError):
        soft_oks_nms(kpts, scores, areas, sigmas, method="cubic")


BOX = np.array([0.9, 0.5])
KPS = np.array([[0.1, 0.3, 0.5], [0.1, 0.1, 0.1]])


def test_rescore_instances_numbers():
    np.testing.assert_allclose(rescore_instances(BOX, KPS, "box"), [0.9, 0.5])
    # 0.9 x mean(0.3, 0.5); no keypoint above 0.2 -> 0
    np.testing.assert_allclose(rescore_instances(BOX, KPS, "box_x_mean"), [0.36, 0.0])
    np.testing.assert_allclose(rescore_instances(BOX, KPS, "box_x_mean", thresh=0.0), [0.9 * 0.3, 0.5 * 0.1])
    # the authors' box + mean + max (1.7, 0.7) divided by its three terms: in [0, 1], the same ranking
    np.testing.assert_allclose(rescore_instances(BOX, KPS, "box_plus_mean_max"), [1.7 / 3, 0.7 / 3])
    # (R, K, 3) keypoints are accepted too
    kpts = np.concatenate([np.zeros(KPS.shape + (2,)), KPS[..., None]], -1)
    np.testing.assert_allclose(rescore_instances(BOX, kpts, "box_plus_mean_max"), [1.7 / 3, 0.7 / 3])
    # scores above 1 (heatmap maxima, given person scores) are clipped: every rule stays in [0, 1]
    np.testing.assert_allclose(rescore_instances([1.0, 0.5], [[1.2, 1.1], [0.3, 0.5]], "box_x_mean"), [1.0, 0.2])
    np.testing.assert_allclose(rescore_instances([1.4, -0.1], KPS, "box"), [1.0, 0.0])
    with pytest.raises(ValueError):
        rescore_instances(BOX, KPS, "nope")


def test_rescore_instances_keeps_tensor_type():
    out = rescore_instances(torch.tensor(BOX, dtype=torch.float32), torch.tensor(KPS), "box_x_mean")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.36, 0.0]))
    assert isinstance(rescore_instances(BOX, torch.tensor(KPS)), np.ndarray)
    assert rescore_instances(np.zeros(0), np.zeros((0, 17))).shape == (0,)
