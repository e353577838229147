"""The pose tracker on a detector's noise: low-scored duplicates near the real people and spurious
detections elsewhere (what a person detector at score threshold 0.05 hands a pose model) must not
become people of their own; a real person whose score dips keeps its id."""
from typing import List, Tuple

import numpy as np

from d2pose.utils.tracking import PoseTracker

COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
               0.087, 0.087, 0.089, 0.089]
FRAMES = 12
PEOPLE = 4
# (x, y) start and velocity per frame of the four people, in a 640 x 480 frame
STARTS = np.array([[60.0, 120.0], [220.0, 140.0], [420.0, 110.0], [540.0, 300.0]])
SPEEDS = np.array([[5.0, 0.5], [-3.0, 1.0], [2.0, 2.0], [-6.0, -1.0]])


def _pose(center: np.ndarray, rng: np.random.Generator, score: float = 0.9) -> np.ndarray:
    """(17, 3) stick figure about 130 px tall around `center`, keypoint scores about `score`."""
    shape = np.linspace([0.0, -60.0], [0.0, 70.0], 17) + np.tile([[-12.0, 0.0], [12.0, 0.0]], (9, 1))[:17]
    xy = center + shape + rng.normal(0, 1.0, (17, 2))
    return np.concatenate([xy, np.clip(rng.normal(score, 0.05, (17, 1)), 0.0, 1.0)], 1)


def _box(kps: np.ndarray) -> np.ndarray:
    return np.concatenate([kps[:, :2].min(0) - 5, kps[:, :2].max(0) + 5])


def _noisy_frame(t: int, rng: np.random.Generator) -> List[Tuple[int, np.ndarray, float]]:
    """(person or -1 for noise, pose, instance score) of frame t: the four people (person 3's score
    dips below the tracker's new-track score on frames 5-6), 1-3 low-scored duplicates of real people
    a few pixels off, and 1-2 spurious low-scored people at random places."""
    out = []
    for p in range(PEOPLE):
        score = 0.2 if p == 3 and t in (5, 6) else rng.uniform(0.6, 0.95)
        out.append((p, _pose(STARTS[p] + t * SPEEDS[p], rng), score))
    for p in rng.choice(PEOPLE, size=rng.integers(1, 4), replace=False):
        dup = out[p][1].copy()
        dup[:, :2] += rng.uniform(-6, 6, 2)
        dup[:, 2] *= 0.4
        out.append((-1, dup, rng.uniform(0.03, 0.25)))
    for _ in range(rng.integers(1, 3)):
        out.append((-1, _pose(rng.uniform([40, 60], [600, 420]), rng, score=0.3), rng.uniform(0.03, 0.28)))
    return out


def _track(tracker: PoseTracker, rng: np.random.Generator):
    """{person: [id per frame]} and every id the tracker gave any detection."""
    ids_of, issued = {}, set()
    for t in range(FRAMES):
        frame = _noisy_frame(t, rng)
        order = rng.permutation(len(frame))
        kps = np.stack([frame[i][1] for i in order])
        boxes = np.stack([_box(k) for k in kps])
        ids, _ = tracker.update(kps, boxes, np.array([frame[i][2] for i in order]))
        for i, track_id in zip(order, ids):
            if frame[i][0] >= 0:
                ids_of.setdefault(frame[i][0], []).append(int(track_id))
            issued.add(int(track_id))
    return ids_of, issued - {-1}


def test_noisy_detections_keep_four_ids_for_four_people():
    ids_of, issued = _track(PoseTracker(COCO_SIGMAS), np.random.default_rng(0))
    assert all(len(set(v)) == 1 and v[0] >= 0 for v in ids_of.values()), ids_of  # one id each, dips included
    assert len({v[0] for v in ids_of.values()}) == PEOPLE
    assert issued == {v[0] for v in ids_of.values()}, issued  # no id for any noise


def test_without_the_gates_every_noisy_detection_is_a_person():
    """The same video with every detection tracked (new_track_score 0, no duplicate test): the noise
    takes dozens of ids, what the video demo showed (47 ids for 4 people)."""
    _, issued = _track(PoseTracker(COCO_SIGMAS, new_track_score=0.0, duplicate_thresh=1.0), np.random.default_rng(0))
    assert len(issued) > 3 * PEOPLE


def test_a_confident_duplicate_of_a_new_person_gets_no_id():
    """A person seen for the first time twice (a detector's two boxes, both confident): one new id, the
    lower-scored copy -1, in whichever order the detections come."""
    rng = np.random.default_rng(1)
    real = _pose(np.array([200.0, 200.0]), rng)
    copy = real.copy()
    copy[:, :2] += 3.0
    other = _pose(np.array([450.0, 200.0]), rng)
    kps = np.stack([copy, real, other])
    for order in ([0, 1, 2], [2, 1, 0]):
        tracker = PoseTracker(COCO_SIGMAS)
        ids, _ = tracker.update(kps[order], np.stack([_box(k) for k in kps[order]]), np.array([0.5, 0.9, 0.8])[order])
        by_detection = dict(zip(order, ids.tolist()))
        assert by_detection[0] == -1 and sorted([by_detection[1], by_detection[2]]) == [0, 1]
