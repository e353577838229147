"""OKS-based non-maximum suppression (OKS-NMS, soft-OKS-NMS) and instance rescoring for pose estimation.

Object Keypoint Similarity (OKS) is COCO's keypoint metric: for two poses of one person,

    OKS = mean_k exp(-d_k^2 / (2 s^2 (2 sigma_k)^2))

over the keypoints k of the reference pose, where d_k is the distance between the two k-th keypoints
and s^2 the object area. Top-down methods (SimpleBaseline, HRNet, TransPose, Poseur, RLE, ...) run
OKS-NMS over the poses estimated from every person detection of an image, and rescore each pose from
its detection score and keypoint scores before NMS and evaluation; `rescore_instances` gathers the
rescoring rules those methods use, each mapped monotonically into [0, 1] (the authors' ranking, hence
COCO's AP, is kept; one threshold reads the same for every method).

All functions accept numpy arrays or torch tensors. Rescoring returns the type it was given; the NMS
functions return kept indices as an int64 numpy array, or a LongTensor (on the input's device) when
the keypoints were a tensor.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..structures.keypoints import pairwise_oks

__all__ = ["oks_iou", "oks_nms", "soft_oks_nms", "rescore_instances", "RESCORE_METHODS"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def _np(x: ArrayLike) -> np.ndarray:
    """float64 numpy view of an array, tensor or sequence."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _indices_like(indices: np.ndarray, like: ArrayLike) -> Union[np.ndarray, torch.Tensor]:
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(indices, dtype=torch.long, device=like.device)
    return indices


def oks_iou(
    kpts: ArrayLike,
    others: ArrayLike,
    area: float,
    other_areas: ArrayLike,
    sigmas: ArrayLike,
    vis_thresh: Optional[float] = None,
) -> np.ndarray:
    """OKS between one reference pose and R other poses.

    Follows MMPose/HRNet's `oks_iou`: the object scale s^2 is the mean of the two areas, k = 2 sigma,
    and the per-keypoint similarities are averaged over the reference pose's keypoints whose score
    exceeds `vis_thresh` (all keypoints when `vis_thresh` is None; MMPose effectively masks with the
    other pose's scores, d2pose uses the reference pose's as COCO does with its ground truth). When
    no keypoint passes the threshold, the OKS is 0.

    Args:
        kpts: (K, 3) reference pose (x, y, score), or (K, 2) when `vis_thresh` is None.
        others: (R, K, 3) or (R, K, 2) poses compared with the reference.
        area: area of the reference pose (e.g. its box area w * h).
        other_areas: (R,) areas of the other poses.
        sigmas: (K,) OKS sigmas of the keypoint set (COCO's, already divided by 10).
        vis_thresh: keypoint score threshold of the reference pose, or None.

    Returns:
        (R,) float64 numpy array of OKS values in [0, 1].
    """
    ref, oth = _np(kpts), _np(others)
    if oth.ndim == 2:
        oth = oth[None]
    sig = _np(sigmas).reshape(-1)
    if ref.shape[0] != sig.shape[0] or oth.shape[1] != sig.shape[0]:
        raise ValueError(f"oks_iou: {ref.shape[0]} / {oth.shape[1]} keypoints but {sig.shape[0]} sigmas")
    mask = np.ones(ref.shape[0], dtype=bool)
    if vis_thresh is not None:
        if ref.shape[1] < 3:
            raise ValueError("oks_iou: vis_thresh needs keypoint scores, got (K, 2) keypoints")
        mask = ref[:, 2] > vis_thresh
    if oth.shape[0] == 0 or not mask.any():
        return np.zeros(oth.shape[0], dtype=np.float64)
    scale = (float(area) + _np(other_areas).reshape(-1)) / 2.0  # s^2 of each pair: the mean area, (R,)
    oks, _ = pairwise_oks(ref[None], oth, sig, scale, mask)  # (1, R)
    return oks[0]


def _prepare(keypoints: ArrayLike, scores: ArrayLike, areas: ArrayLike) -> Tuple[np.ndarray, ...]:
    kpts, sc, ar = _np(keypoints), _np(scores).reshape(-1), _np(areas).reshape(-1)
    if kpts.ndim != 3 or kpts.shape[0] != sc.shape[0] or ar.shape[0] != sc.shape[0]:
        raise ValueError(f"keypoints {kpts.shape}, scores {sc.shape} and areas {ar.shape} do not match (R, K, 3)")
    return kpts, sc, ar


def oks_nms(
    keypoints: ArrayLike,
    scores: ArrayLike,
    areas: ArrayLike,
    sigmas: ArrayLike,
    thresh: float = 0.9,
    vis_thresh: Optional[float] = None,
) -> Union[np.ndarray, torch.Tensor]:
    """Greedy OKS-NMS: keeps the best-scored pose, drops every pose whose OKS with it exceeds `thresh`,
    and repeats on the rest.

    Args:
        keypoints: (R, K, 3) poses (x, y, keypoint score).
        scores: (R,) instance scores.
        areas: (R,) pose areas (s^2 of the OKS).
        sigmas: (K,) OKS sigmas.
        thresh: poses with OKS > thresh with a kept pose are suppressed.
        vis_thresh: keypoint score threshold passed to `oks_iou`.

    Returns:
        Indices of the kept poses in decreasing score order: int64 numpy array, or a LongTensor when
        `keypoints` is a tensor.
    """
    kpts, sc, ar = _prepare(keypoints, scores, areas)
    order = np.argsort(-sc, kind="stable")
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = oks_iou(kpts[best], kpts[rest], ar[best], ar[rest], sigmas, vis_thresh)
        order = rest[overlap <= thresh]
    return _indices_like(np.array(keep, dtype=np.int64), keypoints)


def _soft_rescore(overlap: np.ndarray, scores: np.ndarray, thresh: float, method: str) -> np.ndarray:
    """Soft-NMS decay of `scores` by their OKS `overlap` with the pose just kept."""
    if method == "linear":
        return np.where(overlap >= thresh, scores * (1.0 - overlap), scores)
    if method == "gaussian":
        return scores * np.exp(-(overlap ** 2) / thresh)
    raise ValueError(f"soft_oks_nms: unknown method {method!r}; use 'gaussian' or 'linear'")


def soft_oks_nms(
    keypoints: ArrayLike,
    scores: ArrayLike,
    areas: ArrayLike,
    sigmas: ArrayLike,
    thresh: float = 0.3,
    max_dets: int = 20,
    vis_thresh: Optional[float] = None,
    method: str = "gaussian",
) -> Tuple[Union[np.ndarray, torch.Tensor], np.ndarray]:
    """Soft-OKS-NMS (MMPose's `soft_oks_nms`): instead of dropping overlapping poses, decays their
    scores and re-sorts, until `max_dets` poses are kept.

    Gaussian decay: score * exp(-OKS^2 / thresh). Linear decay: score * (1 - OKS) when OKS >= thresh.

    Args:
        keypoints, scores, areas, sigmas, vis_thresh: as in `oks_nms`.
        thresh: Gaussian variance or linear threshold.
        max_dets: maximum number of kept poses.
        method: "gaussian" or "linear".

    Returns:
        (keep, new_scores): indices of the kept poses in the order they were kept (same type rules as
        `oks_nms`) and their decayed scores (float64 numpy array, non-increasing).
    """
    kpts, sc, ar = _prepare(keypoints, scores, areas)
    order = np.argsort(-sc, kind="stable")
    current = sc[order]
    keep, kept_scores = [], []
    while order.size > 0 and len(keep) < max_dets:
        best, rest = order[0], order[1:]
        keep.append(best)
        kept_scores.append(current[0])
        overlap = oks_iou(kpts[best], kpts[rest], ar[best], ar[rest], sigmas, vis_thresh)
        current = _soft_rescore(overlap, current[1:], thresh, method)
        resort = np.argsort(-current, kind="stable")
        order, current = rest[resort], current[resort]
    return _indices_like(np.array(keep, dtype=np.int64), keypoints), np.array(kept_scores, dtype=np.float64)


def _score_box(box: np.ndarray, kps: np.ndarray, thresh: float) -> np.ndarray:
    return box


def _score_box_x_mean(box: np.ndarray, kps: np.ndarray, thresh: float) -> np.ndarray:
    confident = kps > thresh
    count = confident.sum(axis=1)
    mean = np.where(count > 0, (kps * confident).sum(axis=1) / np.maximum(count, 1), 0.0)
    return box * mean


def _score_box_plus_mean_max(box: np.ndarray, kps: np.ndarray, thresh: float) -> np.ndarray:
    if kps.shape[1] == 0:
        return box
    return (box + kps.mean(axis=1) + kps.max(axis=1)) / 3.0


RESCORE_METHODS: Dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    # detector score only
    "box": _score_box,
    # SimpleBaseline/HRNet/TransPose: box score x mean of the keypoint scores above `thresh` (0 if none)
    "box_x_mean": _score_box_x_mean,
    # RLE / Poseur official code: box score + mean keypoint score + max keypoint score, divided by 3
    # (three terms in [0, 1]: the authors' sum in [0, 3] rescaled, the same ranking)
    "box_plus_mean_max": _score_box_plus_mean_max,
}


def rescore_instances(
    box_scores: ArrayLike,
    keypoint_scores: ArrayLike,
    method: str = "box_x_mean",
    thresh: float = 0.2,
) -> Union[np.ndarray, torch.Tensor]:
    """Instance scores in [0, 1] from detection scores and keypoint scores, by a named rule.

    Methods (see `RESCORE_METHODS`):
        "box": the detection score.
        "box_x_mean": detection score x mean of the keypoint scores > `thresh` (0 when none passes);
            the rescoring of SimpleBaseline, HRNet and TransPose (thresh 0.2).
        "box_plus_mean_max": (detection score + mean + max of all keypoint scores) / 3: the RLE and
            Poseur authors' sum, which runs over [0, 3], divided by its three terms.

    Every rule's result is then clipped to [0, 1]. With detection and keypoint scores in [0, 1]
    (detectors, ground-truth boxes (1), regression heads' scores from sigma) the clip changes
    nothing; it bounds what can exceed 1 (heatmap maxima a little above 1, given person scores). Both
    maps are monotone, so the ranking of the authors' rules, and the COCO AP that depends on it
    alone, are kept (the clip ties only scores outside [0, 1]).

    Args:
        box_scores: (R,) detection scores.
        keypoint_scores: (R, K) keypoint scores, or (R, K, 3) keypoints whose last column is the score.
        method: rule name.
        thresh: keypoint score threshold of "box_x_mean".

    Returns:
        (R,) scores in [0, 1], a tensor (dtype and device of `box_scores`) when `box_scores` is a
        tensor, else a float64 numpy array.
    """
    if method not in RESCORE_METHODS:
        raise ValueError(f"rescore_instances: unknown method {method!r}; choose one of {sorted(RESCORE_METHODS)}")
    box = _np(box_scores).reshape(-1)
    kps = _np(keypoint_scores)
    if kps.ndim == 3:
        kps = kps[..., 2]
    kps = kps.reshape(box.shape[0], -1) if box.size else np.zeros((0, 0))
    out = np.clip(RESCORE_METHODS[method](box, kps, thresh), 0.0, 1.0)
    if isinstance(box_scores, torch.Tensor):
        return torch.as_tensor(out, device=box_scores.device).to(box_scores.dtype)
    return out
