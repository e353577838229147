"""Online multi-person pose tracking across video frames, and One-Euro smoothing of keypoints.

A per-frame pose estimator gives every frame's people in no particular order. `PoseTracker` links
them over time by tracking-by-detection, giving each person a stable integer id:

1. Similarity. Every detection of the new frame is compared with every live track (a person seen in
   a recent frame) by Object Keypoint Similarity (OKS), COCO's keypoint metric,

       OKS = mean_k exp(-d_k^2 / (2 s^2 (2 sigma_k)^2)),

   between the detection's keypoints and the track's keypoints predicted for this frame (its last
   ones moved by its velocity, the running mean of its box centre's motion per frame; `motion`),
   where d_k is the distance of the
   k-th keypoints, s^2 the area of the track's last box and sigma_k the per-keypoint OKS sigma. Only
   keypoints whose score exceeds `min_keypoint_score` in both poses take part; when no keypoint does,
   the box IoU stands in for the OKS (`use_iou_fallback`), otherwise the pair gets similarity 0.
2. Assignment. The detection-to-track assignment that maximises the total similarity is found by
   the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`); pairs below `match_thresh` are
   excluded before the assignment and never matched. It runs twice (ByteTrack's order): first the
   confident detections (score >= `new_track_score`) against every live track, then the others
   against the tracks still unmatched, so that a low-scored duplicate of a person never takes that
   person's track, while a person whose score drops for a while keeps it.
3. Track management. A matched track takes the detection's keypoints and box. An unmatched confident
   detection starts a new track with the next id, unless it duplicates a person already tracked in
   this frame (similarity > `duplicate_thresh` with a detection that has an id: the leftovers of a
   detector's and the pose model's duplicate boxes). Ids start at 0 and are never reused, so a person
   lost for too long comes back under a new id. Unmatched detections scored below `new_track_score`
   and duplicates get id -1 (not tracked). A track unmatched for more than `max_age` consecutive
   frames is dropped.

The result does not depend on the order of the detections: they are put into a canonical order
(sorted by box, score and keypoints) before matching, and new ids are issued in that order.

Optionally (`smoothing`), every track owns a `OneEuroFilter` on its (K, 2) keypoint coordinates,
which removes most of the frame-to-frame jitter of the estimates while adding little lag to fast
motion. The One-Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems", CHI 2012) is an exponential low-pass filter whose
cutoff frequency grows with the signal's speed: `min_cutoff` (Hz) sets the smoothing of slow motion
(lower: less jitter, more lag) and `beta` how fast the cutoff rises with speed (higher: less lag on
fast motion). Keypoint scores are not smoothed. Matching always uses the raw (unsmoothed) keypoints.

Usage::

    from d2pose.data.metadata import COCO_PERSON    # or any (K,) sequence of OKS sigmas

    tracker = PoseTracker(sigmas=COCO_PERSON.sigmas, smoothing={"min_cutoff": 1.0, "beta": 0.01}, fps=30)
    for frame in video:
        kps, boxes, scores = estimate(frame)       # (R, K, 3), (R, 4) XYXY, (R,)
        ids, kps = tracker.update(kps, boxes, scores)
        ...                                        # ids[i] is the person id of detection i
    tracker.reset()                                # before the next video

`OneEuroFilter` is usable on its own, on arrays of any shape::

    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    for t, x in samples:                           # t in seconds, strictly increasing
        x_smooth = f(x, t)

Works on numpy arrays (scipy for the assignment); the OKS is `d2pose.structures.pairwise_oks`.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..structures.keypoints import pairwise_oks

__all__ = ["OneEuroFilter", "PoseTracker", "oks_matrix", "box_iou_matrix"]


# --------------------------------------------------------------------------------------------------
# One-Euro filter
# --------------------------------------------------------------------------------------------------
def _alpha(cutoff, dt: float):
    """Smoothing factor of an exponential low-pass filter of cutoff `cutoff` (Hz, scalar or array)
    sampled every `dt` seconds: 1 / (1 + tau / dt) with tau = 1 / (2 pi cutoff)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012), element-wise on arrays of any shape.

    For a sample x at time t (seconds) after a previous sample x_prev at t_prev, dt = t - t_prev:

        dx      = (x - x_prev) / dt                             speed of the raw signal
        dx_hat  = a(d_cutoff) * dx + (1 - a(d_cutoff)) * dx_hat_prev
        cutoff  = min_cutoff + beta * |dx_hat|                  element-wise
        x_hat   = a(cutoff) * x + (1 - a(cutoff)) * x_hat_prev

    with a(fc) = 1 / (1 + tau / dt), tau = 1 / (2 pi fc). The first sample is returned unchanged
    (and the initial speed estimate is 0). With beta = 0 this is a plain exponential low-pass filter
    of cutoff `min_cutoff`.

    Every element is filtered independently, so a (K, 2) array filters K keypoints' x and y at once.
    There is no visibility mask: pass keypoints that are not visible in a frame as their raw
    (estimated) values.

    Args:
        min_cutoff: minimum cutoff frequency in Hz (> 0); lower values smooth more at low speed.
        beta: speed coefficient (>= 0); higher values reduce the lag on fast motion.
        d_cutoff: cutoff frequency in Hz (> 0) of the low-pass filter on the speed.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if not (math.isfinite(min_cutoff) and min_cutoff > 0):
            raise ValueError(f"OneEuroFilter: min_cutoff must be a positive number of Hz, got {min_cutoff}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"OneEuroFilter: beta must be >= 0, got {beta}")
        if not (math.isfinite(d_cutoff) and d_cutoff > 0):
            raise ValueError(f"OneEuroFilter: d_cutoff must be a positive number of Hz, got {d_cutoff}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next call is treated as the first sample."""
        self._t_prev: Optional[float] = None
        self._x_prev: Optional[np.ndarray] = None  # previous raw sample
        self._x_hat: Optional[np.ndarray] = None  # previous filtered value
        self._dx_hat: Optional[np.ndarray] = None  # previous filtered speed

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample `x` taken at time `t` (seconds, strictly increasing between calls).

        Returns:
            float64 array of x's shape: the filtered value (a copy of x on the first call).
        """
        x = np.array(x, dtype=np.float64)  # a copy: the state never aliases the caller's array
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"OneEuroFilter: t must be a finite time in seconds, got {t}")
        if self._t_prev is None:
            self._t_prev, self._x_prev, self._x_hat = t, x, x.copy()
            self._dx_hat = np.zeros_like(x)
            return x.copy()
        if x.shape != self._x_prev.shape:
            raise ValueError(
                f"OneEuroFilter: sample shape changed from {self._x_prev.shape} to {x.shape}; "
                "use one filter per signal, or reset() it")
        dt = t - self._t_prev
        if not dt > 0:
            raise ValueError(
                f"OneEuroFilter: time must strictly increase, got t={t} after t={self._t_prev}")
        dx = (x - self._x_prev) / dt
        a_d = _alpha(self.d_cutoff, dt)
        dx_hat = a_d * dx + (1.0 - a_d) * self._dx_hat
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        a = _alpha(cutoff, dt)
        x_hat = a * x + (1.0 - a) * self._x_hat
        self._t_prev, self._x_prev, self._x_hat, self._dx_hat = t, x, x_hat, dx_hat
        return x_hat.copy()


# --------------------------------------------------------------------------------------------------
# similarities
# --------------------------------------------------------------------------------------------------
def _oks_and_counts(kps_a: np.ndarray, kps_b: np.ndarray, areas_b: np.ndarray, sigmas: np.ndarray,
                    min_score: float) -> Tuple[np.ndarray, np.ndarray]:
    """(A, B) OKS (0 where no keypoint is usable) and (A, B) number of keypoints used."""
    valid = (kps_a[:, None, :, 2] > min_score) & (kps_b[None, :, :, 2] > min_score)  # (A, B, K)
    return pairwise_oks(kps_a, kps_b, sigmas, np.maximum(areas_b, 0.0), valid)  # scale: B's area, eps added


def _check_kps(name: str, kps: np.ndarray, k: Optional[int]) -> np.ndarray:
    kps = np.asarray(kps, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[2] != 3 or (k is not None and kps.shape[1] != k):
        want = f"(N, {k}, 3)" if k is not None else "(N, K, 3)"
        raise ValueError(f"{name} must have shape {want} [x, y, score], got {kps.shape}")
    return kps


def oks_matrix(kps_a: np.ndarray, kps_b: np.ndarray, areas_b: np.ndarray, sigmas: Sequence[float],
               min_score: float = 0.0) -> np.ndarray:
    """Pairwise Object Keypoint Similarity between poses A and poses B.

    OKS[i, j] = mean over keypoints k valid in both poses of
    exp(-d_k^2 / (2 * area_j * (2 sigma_k)^2)), with d_k the distance between the k-th keypoints of
    A[i] and B[j], and area_j the object area of B[j] (COCO's formula with B as the reference). A
    keypoint is valid in a pose when its score exceeds `min_score`. Pairs without any keypoint valid
    in both get 0.

    Args:
        kps_a: (A, K, 3) poses [x, y, score].
        kps_b: (B, K, 3) poses [x, y, score].
        areas_b: (B,) object areas (e.g. box areas) of the B poses.
        sigmas: (K,) OKS sigmas (COCO's 17 values for COCO keypoints).
        min_score: keypoints with score <= min_score are ignored.

    Returns:
        (A, B) float64 array in [0, 1].
    """
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    a = _check_kps("kps_a", kps_a, sig.shape[0])
    b = _check_kps("kps_b", kps_b, sig.shape[0])
    areas = np.asarray(areas_b, dtype=np.float64).reshape(-1)
    if areas.shape[0] != b.shape[0]:
        raise ValueError(f"areas_b must have shape ({b.shape[0]},) like kps_b, got {np.shape(areas_b)}")
    return _oks_and_counts(a, b, areas, sig, float(min_score))[0]


def _check_boxes(name: str, boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) [x1, y1, x2, y2], got {boxes.shape}")
    return boxes


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of boxes.

    Args:
        a: (A, 4) boxes, XYXY.
        b: (B, 4) boxes, XYXY.

    Returns:
        (A, B) float64 array in [0, 1] (0 for pairs whose union is empty).
    """
    a, b = _check_boxes("a", a), _check_boxes("b", b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = _box_areas(a)[:, None] + _box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# --------------------------------------------------------------------------------------------------
# tracker
# --------------------------------------------------------------------------------------------------
class _Track:
    """One tracked person: its id, last raw keypoints and box, missed-frame count and filter."""

    __slots__ = ("id", "keypoints", "box", "missed", "filter", "velocity")

    def __init__(self, track_id: int, keypoints: np.ndarray, box: np.ndarray,
                 filt: Optional[OneEuroFilter]):
        self.id = track_id
        self.keypoints = keypoints
        self.box = box
        self.missed = 0
        self.filter = filt
        self.velocity = np.zeros(2)  # image-plane motion per frame (pixels), of the box centre

    def update(self, keypoints: np.ndarray, box: np.ndarray, momentum: float) -> None:
        """Takes a matched detection; the velocity follows the box centre's motion per frame."""
        frames = self.missed + 1
        step = (0.5 * (box[:2] + box[2:]) - 0.5 * (self.box[:2] + self.box[2:])) / frames
        self.velocity = momentum * self.velocity + (1.0 - momentum) * step
        self.keypoints, self.box, self.missed = keypoints, box, 0

    def predicted(self) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints and box moved by the velocity to the next frame (missed frames included)."""
        shift = self.velocity * (self.missed + 1)
        kps = self.keypoints.copy()
        kps[:, :2] += shift
        return kps, self.box + np.concatenate([shift, shift])


_SMOOTHING_KEYS = ("min_cutoff", "beta", "d_cutoff")


class PoseTracker:
    """Online tracking-by-detection of people across video frames (see the module docstring).

    Args:
        sigmas: (K,) per-keypoint OKS sigmas (COCO's 17 values for COCO keypoints).
        match_thresh: minimum similarity (OKS, or box IoU in the fallback) of a detection-track match.
        max_age: a track unmatched for more than this many consecutive frames is dropped (>= 0).
        min_keypoint_score: keypoints with score <= this value (in the detection or the track) are
            ignored in the OKS.
        use_iou_fallback: when a detection and a track share no usable keypoint, compare them by box
            IoU (True) or give them similarity 0 (False).
        smoothing: None (no smoothing) or a dict of `OneEuroFilter` arguments (keys among
            min_cutoff, beta, d_cutoff) for a filter per track on its keypoint coordinates.
        fps: frame rate, giving the time t = frame_index / fps of frames updated without `t`.
        motion: compare detections with each track's pose moved by its velocity (the box centre's
            motion per frame, averaged with `momentum`), not its last pose: fast people stay
            close to their own prediction rather than to a neighbour's last pose.
        momentum: weight of the previous velocity in its running average (0: last step only).
        new_track_score: detections scoring at least this start tracks and are matched first; the
            others only continue tracks left unmatched (id -1 otherwise). For d2pose's instance
            scores, in [0, 1] for every method; 0 tracks every detection.
        duplicate_thresh: an unmatched detection whose similarity with a detection already tracked in
            the frame exceeds this is that person's duplicate (id -1, no new track); >= 1 turns it off.
    """

    def __init__(
        self,
        sigmas: Sequence[float],
        match_thresh: float = 0.3,
        max_age: int = 30,
        min_keypoint_score: float = 0.0,
        use_iou_fallback: bool = True,
        smoothing: Optional[dict] = None,
        fps: float = 30.0,
        motion: bool = True,
        momentum: float = 0.5,
        new_track_score: float = 0.3,
        duplicate_thresh: float = 0.5,
    ):
        sig = np.asarray(sigmas, dtype=np.float64)
        if sig.ndim != 1 or sig.shape[0] == 0 or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
            raise ValueError(f"sigmas must be a non-empty (K,) sequence of positive numbers, got {sigmas!r}")
        if not math.isfinite(match_thresh):
            raise ValueError(f"match_thresh must be a finite number, got {match_thresh}")
        if int(max_age) != max_age or max_age < 0:
            raise ValueError(f"max_age must be a non-negative integer, got {max_age}")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps}")
        self._smoothing: Optional[Dict[str, float]] = None
        if smoothing is not None:
            if not isinstance(smoothing, dict):
                raise ValueError(f"smoothing must be None or a dict, got {type(smoothing).__name__}")
            unknown = sorted(set(smoothing) - set(_SMOOTHING_KEYS))
            if unknown:
                raise ValueError(f"smoothing: unknown keys {unknown}; expected keys among {list(_SMOOTHING_KEYS)}")
            self._smoothing = dict(smoothing)
            OneEuroFilter(**self._smoothing)  # validates the values now rather than on the first track
        self.sigmas = sig
        self.num_keypoints = int(sig.shape[0])
        self.match_thresh = float(match_thresh)
        self.max_age = int(max_age)
        self.min_keypoint_score = float(min_keypoint_score)
        self.use_iou_fallback = bool(use_iou_fallback)
        self.fps = float(fps)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.motion = bool(motion)
        self.momentum = float(momentum)
        if not (math.isfinite(new_track_score) and math.isfinite(duplicate_thresh)):
            raise ValueError(f"new_track_score and duplicate_thresh must be finite, got {new_track_score}, "
                             f"{duplicate_thresh}")
        self.new_track_score = float(new_track_score)
        self.duplicate_thresh = float(duplicate_thresh)
        self.reset()

    def reset(self) -> None:
        """Drop every track and restart the frame count, the clock and the ids (from 0), e.g. before
        a new video."""
        self._tracks: List[_Track] = []
        self._next_id = 0
        self._frame_index = 0
        self._t_prev: Optional[float] = None

    @property
    def track_ids(self) -> List[int]:
        """Ids of the live tracks (matched in the last `max_age` + 1 frames), ascending."""
        return [tr.id for tr in self._tracks]

    @property
    def frame_index(self) -> int:
        """Number of frames updated since construction or the last `reset()`."""
        return self._frame_index

    # ----------------------------------------------------------------------------------------------
    def _validate(self, keypoints, boxes, scores) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.num_keypoints
        kps = np.asarray(keypoints, dtype=np.float64)
        box = np.asarray(boxes, dtype=np.float64)
        sc = np.asarray(scores, dtype=np.float64)
        # an empty frame may come as (0,) arrays
        if kps.shape == (0,):
            kps = kps.reshape(0, k, 3)
        if box.shape == (0,):
            box = box.reshape(0, 4)
        if kps.ndim != 3 or kps.shape[1:] != (k, 3):
            raise ValueError(f"keypoints must have shape (R, {k}, 3) [x, y, score], got {kps.shape}")
        r = kps.shape[0]
        if box.shape != (r, 4):
            raise ValueError(f"boxes must have shape ({r}, 4) XYXY like keypoints, got {box.shape}")
        if sc.shape != (r,):
            raise ValueError(f"scores must have shape ({r},) like keypoints, got {sc.shape}")
        if not np.all(np.isfinite(kps)):
            raise ValueError("keypoints must be finite (no NaN or inf)")
        if not np.all(np.isfinite(box)):
            raise ValueError("boxes must be finite (no NaN or inf)")
        if not np.all(np.isfinite(sc)):
            raise ValueError("scores must be finite (no NaN or inf)")
        return kps, box, sc

    def _pair_similarity(self, kps: np.ndarray, boxes: np.ndarray, ref_kps: np.ndarray,
                         ref_boxes: np.ndarray) -> np.ndarray:
        """(A, B) similarity of poses A with reference poses B: OKS (B's box areas), box IoU where no
        keypoint is usable and `use_iou_fallback`."""
        sim, counts = _oks_and_counts(kps, ref_kps, _box_areas(ref_boxes), self.sigmas, self.min_keypoint_score)
        if self.use_iou_fallback and np.any(counts == 0):
            sim = np.where(counts > 0, sim, box_iou_matrix(boxes, ref_boxes))
        return sim

    def _similarity(self, kps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(R, T) similarity between the detections and the live tracks."""
        if self.motion:
            predicted = [tr.predicted() for tr in self._tracks]
            t_kps = np.stack([k for k, _ in predicted])
            t_boxes = np.stack([b for _, b in predicted])
        else:
            t_kps = np.stack([tr.keypoints for tr in self._tracks])
            t_boxes = np.stack([tr.box for tr in self._tracks])
        return self._pair_similarity(kps, boxes, t_kps, t_boxes)

    def _assign(self, sim: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Dict[int, int]:
        """{row: col} of the best assignment of `rows` to `cols` of `sim` (pairs >= match_thresh)."""
        if len(rows) == 0 or len(cols) == 0:
            return {}
        sub = sim[np.ix_(rows, cols)]
        gated = np.where(sub >= self.match_thresh, sub, 0.0)  # sub-threshold pairs cannot win
        found = {}
        for i, j in zip(*linear_sum_assignment(gated, maximize=True)):
            if sub[i, j] >= self.match_thresh:
                found[int(rows[i])] = int(cols[j])
        return found

    def _match(self, kps: np.ndarray, boxes: np.ndarray, confident: np.ndarray) -> Dict[int, int]:
        """{detection: track index} for detections in canonical order: the confident ones against
        every live track, then the others against the tracks left."""
        if len(kps) == 0 or not self._tracks:
            return {}
        sim = self._similarity(kps, boxes)
        everyone = np.arange(len(self._tracks))
        first = self._assign(sim, np.nonzero(confident)[0], everyone)
        left = np.setdiff1d(everyone, list(first.values()))
        return {**first, **self._assign(sim, np.nonzero(~confident)[0], left)}

    def _new_tracks(self, kps: np.ndarray, boxes: np.ndarray, scores: np.ndarray, tracked: Sequence[int],
                    candidates: Sequence[int]) -> List[int]:
        """The `candidates` (unmatched confident detections) that start tracks: best-scored first, each
        unless its similarity with a detection tracked in this frame exceeds `duplicate_thresh`."""
        kept = list(tracked)
        for d in sorted(candidates, key=lambda d: -scores[d]):  # stable: canonical order among ties
            if kept and self._pair_similarity(kps[d:d + 1], boxes[d:d + 1], kps[kept], boxes[kept]).max() \
                    > self.duplicate_thresh:
                continue
            kept.append(d)
        return sorted(kept[len(tracked):])

    def update(self, keypoints: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
               t: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Track the people of the next frame.

        Args:
            keypoints: (R, K, 3) poses [x, y, score] of the frame's R people (any order).
            boxes: (R, 4) person boxes, XYXY.
            scores: (R,) detection scores.
            t: time of the frame in seconds (strictly increasing); default frame_index / fps.

        Returns:
            ids: (R,) int64 person ids, ids[i] for detection i; -1 for a detection not tracked (scored
                below `new_track_score` and matching no track, or a duplicate of a tracked person).
            keypoints: (R, K, 3) float64 poses, with smoothed coordinates when smoothing is on (the
                scores column is the input's).
        """
        kps, box, sc = self._validate(keypoints, boxes, scores)
        t = self._frame_index / self.fps if t is None else float(t)
        if not math.isfinite(t) or (self._t_prev is not None and not t > self._t_prev):
            raise ValueError(f"t must be finite and strictly increase between frames, got t={t} after "
                             f"t={self._t_prev}")
        self._t_prev = t
        self._frame_index += 1

        r = kps.shape[0]
        ids = np.full(r, -1, dtype=np.int64)
        out = kps.copy()

        # canonical order of the detections, so the result does not depend on their input order
        order = np.lexsort(np.concatenate([kps.reshape(r, -1), sc[:, None], box], axis=1).T[::-1]) \
            if r else np.zeros(0, dtype=np.int64)

        kps_c, box_c, sc_c = kps[order], box[order], sc[order]  # canonical order
        confident = sc_c >= self.new_track_score
        matches = self._match(kps_c, box_c, confident)  # {canonical detection: track index}
        matched_tracks = set(matches.values())
        unmatched = [i for i in range(r) if i not in matches and confident[i]]
        starting = set(self._new_tracks(kps_c, box_c, sc_c, sorted(matches), unmatched))

        new_tracks: List[_Track] = []
        for i, d in enumerate(order):
            d = int(d)
            if i in matches:
                track = self._tracks[matches[i]]
                track.update(kps[d], box[d], self.momentum)
            elif i in starting:
                filt = OneEuroFilter(**self._smoothing) if self._smoothing is not None else None
                track = _Track(self._next_id, kps[d], box[d], filt)
                self._next_id += 1
                new_tracks.append(track)
            else:
                continue  # not tracked: id -1, keypoints as given
            ids[d] = track.id
            if track.filter is not None:
                out[d, :, :2] = track.filter(kps[d, :, :2], t)

        kept = []
        for j, track in enumerate(self._tracks):
            if j not in matched_tracks:
                track.missed += 1
                if track.missed > self.max_age:
                    continue
            kept.append(track)
        self._tracks = kept + new_tracks  # ascending ids: new ids are larger than every old one
        return ids, out
