"""Tests of the video tools: One-Euro filter, OKS / IoU matrices and the pose tracker."""
import math

import numpy as np
import pytest

from d2pose.utils.tracking import OneEuroFilter, PoseTracker, box_iou_matrix, oks_matrix

COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
               0.087, 0.087, 0.089, 0.089]


def _alpha(fc, dt):
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * fc) / dt)


def test_one_euro_against_hand_computation():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=2.0)
    assert f(np.array([0.0]), 0.0)[0] == 0.0  # first sample passes through
    dt = 0.1
    # step to 1: speed 10, filtered speed a_d * 10, cutoff 1 + 0.5 * that
    ad = _alpha(2.0, dt)
    dx_hat = ad * 10.0
    a = _alpha(1.0 + 0.5 * dx_hat, dt)
    x1 = a * 1.0
    assert f(np.array([1.0]), 0.1)[0] == pytest.approx(x1, rel=1e-12)
    # hold at 1: speed 0
    dx_hat2 = (1 - ad) * dx_hat
    a2 = _alpha(1.0 + 0.5 * dx_hat2, dt)
    assert f(np.array([1.0]), 0.2)[0] == pytest.approx(a2 * 1.0 + (1 - a2) * x1, rel=1e-12)
    with pytest.raises(ValueError, match="strictly increas|t must"):
        f(np.array([1.0]), 0.2)


def test_one_euro_lag_and_noise():
    t = np.arange(200) / 30.0
    noisy = 2.0 + np.random.default_rng(0).normal(0, 0.05, t.shape)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    smooth = np.array([f(np.array(v), s) for v, s in zip(noisy, t)])
    assert np.std(smooth[30:] - 2.0) < 0.5 * np.std(noisy[30:] - 2.0)  # jitter removed
    ramp = 10.0 * t  # lag on motion: less with a higher cutoff, less with beta > 0
    lag = {}
    for fc, beta in ((0.5, 0.0), (5.0, 0.0), (0.5, 1.0)):
        f = OneEuroFilter(min_cutoff=fc, beta=beta)
        lag[fc, beta] = ramp[-1] - [f(np.array(v), s) for v, s in zip(ramp, t)][-1]
    assert lag[0.5, 0.0] > lag[5.0, 0.0] > 0 and lag[0.5, 0.0] > lag[0.5, 1.0]
    const = OneEuroFilter()
    assert all(np.allclose(const(np.full((17, 2), 3.0), i / 30), 3.0, rtol=1e-15) for i in range(5))


def test_oks_and_iou_matrices():
    a = np.zeros((1, 2, 3))
    a[0, :, 2] = 1
    b = a.copy()
    b[0, 1, :2] = (3.0, 4.0)  # keypoint 1 is 5 px away
    area = np.array([100.0])
    sig = [0.1, 0.2]
    expected = (1.0 + math.exp(-25.0 / (2 * 100.0 * (2 * 0.2) ** 2))) / 2
    assert oks_matrix(a, b, area, sig)[0, 0] == pytest.approx(expected)
    assert oks_matrix(a, a, area, sig)[0, 0] == pytest.approx(1.0)
    c = b.copy()
    c[0, 1, 2] = 0.0  # ignored keypoint
    assert oks_matrix(a, c, area, sig)[0, 0] == pytest.approx(1.0)
    iou = box_iou_matrix(np.array([[0, 0, 2, 2.0]]), np.array([[1, 0, 3, 2.0], [5, 5, 6, 6.0]]))
    assert iou[0].tolist() == pytest.approx([1 / 3, 0.0])


def _walkers(frames, rng, gap=None):
    """Three people; 0 and 1 cross paths. Returns per frame a list of (person, (17, 3) pose)."""
    base = rng.normal(0, 12, (17, 2)) + np.linspace([0, -40], [0, 60], 17)
    starts = [np.array([40.0, 75.0]), np.array([280.0, 92.0]), np.array([150.0, 170.0])]
    speeds = [np.array([6.0, 0.5]), np.array([-6.0, 0.0]), np.array([0.5, -0.5])]
    out = []
    for t in range(frames):
        people = []
        for p in range(3):
            if gap is not None and p == 2 and gap[0] <= t < gap[1]:
                continue
            xy = base + starts[p] + t * speeds[p] + rng.normal(0, 1.0, (17, 2))
            people.append((p, np.concatenate([xy, np.ones((17, 1))], 1)))
        out.append(people)
    return out


def _run(tracker, frames, rng):
    ids_of = {}
    for people in frames:
        order = rng.permutation(len(people))
        kps = np.stack([people[i][1] for i in order]) if len(people) else np.zeros((0, 17, 3))
        boxes = np.concatenate([kps[..., :2].min(1), kps[..., :2].max(1)], -1) if len(people) else np.zeros((0, 4))
        ids, _ = tracker.update(kps, boxes, np.ones(len(people)))
        for i, track_id in zip(order, ids):
            ids_of.setdefault(people[i][0], []).append(int(track_id))
    return ids_of


def test_tracker_keeps_identities_through_crossing():
    rng = np.random.default_rng(1)
    ids_of = _run(PoseTracker(COCO_SIGMAS), _walkers(60, rng), rng)
    assert all(len(set(v)) == 1 for v in ids_of.values()), ids_of
    assert sorted(v[0] for v in ids_of.values()) == [0, 1, 2]


@pytest.mark.parametrize("max_age,same", [(5, True), (4, False)])
def test_tracker_lost_person(max_age, same):
    rng = np.random.default_rng(2)
    ids_of = _run(PoseTracker(COCO_SIGMAS, max_age=max_age), _walkers(30, rng, gap=(10, 15)), rng)
    assert (len(set(ids_of[2])) == 1) == same
    if not same:
        assert max(ids_of[2]) == 3  # a new id, never a reused one


def test_tracker_empty_frames_and_smoothing():
    tracker = PoseTracker(COCO_SIGMAS, smoothing=dict(min_cutoff=0.5, beta=0.0))
    ids, kps = tracker.update(np.zeros((0, 17, 3)), np.zeros((0, 4)), np.zeros(0))
    assert ids.shape == (0,) and ids.dtype == np.int64 and kps.shape == (0, 17, 3)
    rng = np.random.default_rng(3)
    truth = np.linspace([100, 50], [110, 150], 17)
    raw, smooth = [], []
    for _ in range(60):
        k = np.concatenate([truth + rng.normal(0, 2.0, truth.shape), np.ones((17, 1))], 1)
        box = np.concatenate([k[:, :2].min(0), k[:, :2].max(0)])[None]
        ids, out = tracker.update(k[None], box, np.ones(1))
        assert ids.tolist() == [0]
        raw.append(k[:, :2])
        smooth.append(out[0, :, :2])
    assert np.std(np.array(smooth[20:]) - truth) < 0.6 * np.std(np.array(raw[20:]) - truth)
    with pytest.raises(ValueError, match="keypoints"):
        tracker.update(np.zeros((2, 5, 3)), np.zeros((2, 4)), np.zeros(2))
