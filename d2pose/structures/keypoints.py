"""Object Keypoint Similarity (OKS), COCO's keypoint metric (Lin et al., "Microsoft COCO: Common Objects in
Context", ECCV 2014; the keypoint evaluation of cocodataset.org), between every pose of one set and every
pose of another: the one implementation behind OKS-NMS (`d2pose.evaluation.oks_nms`), pose tracking
(`d2pose.utils.tracking`) and LOGO-CAP's mesh targets (`d2pose_logocap.mesh_oks`).

For poses a and b with keypoints k, distance d_k, object scale s (an area, s^2 in COCO's notation) and
per-keypoint sigma_k, the k-th similarity is

    exp(-d_k^2 / D_k),   D_k = 2 (f sigma_k)^2 (s + eps)   (at least `min_denominator`),

and the OKS is its mean over the keypoints that take part (0 when none does). COCO's convention is
f = 2 (sigmas as published, e.g. 0.026 for the nose) and eps = `np.spacing(1)`; a caller whose sigmas
already carry the factor passes f = 1. What differs between the users is a parameter, not a copy:

- the scale s of each pair (`scales`, broadcast to (A, B)): the reference pose's area (tracking: the
  track's box area, clipped at 0), the mean of the two poses' areas (OKS-NMS, as MMPose / HRNet), or
  an annotated area as it is (LOGO-CAP);
- the guard against a zero scale: `eps` added to the scale (COCO), or `min_denominator` on D_k
  (LOGO-CAP: eps 0, D_k >= 1e-6);
- which keypoints take part (`valid`, broadcast to (A, B, K)): both poses' scores above a threshold
  (tracking), the reference's (OKS-NMS), the ground truth's labelled keypoints (LOGO-CAP).

Numpy arrays and torch tensors are both accepted (all inputs of one call of one kind); the result has
the inputs' kind and float dtype. The arithmetic is the same for every caller: D_k is a product (its
factor 2 is exact), so the order in which a caller used to multiply does not change a bit.

Shape shorthand: A poses of the first set, B of the second, K keypoints.
"""
from typing import Optional, Tuple, TypeVar

import numpy as np
import torch

__all__ = ["COCO_EPS", "keypoint_similarities", "masked_keypoint_mean", "pairwise_oks"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)

#: COCO's guard against a zero area (cocoeval's `np.spacing(1)`)
COCO_EPS = float(np.spacing(1))


def _exp(x: Array) -> Array:
    return torch.exp(x) if isinstance(x, torch.Tensor) else np.exp(x)


def _at_least(x: Array, low: float) -> Array:
    return x.clamp_min(low) if isinstance(x, torch.Tensor) else np.maximum(x, low)


def _zero_where_not(mask: Array, x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return np.where(mask, x, 0.0)


def _all_true(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.ones(x.shape, dtype=torch.bool, device=x.device)
    return np.ones(x.shape, dtype=bool)


def keypoint_similarities(kps_a: Array, kps_b: Array, sigmas: Array, scales: Array, *,
                          sigma_factor: float = 2.0, eps: float = COCO_EPS,
                          min_denominator: Optional[float] = None) -> Array:
    """Per-keypoint similarity exp(-d_k^2 / (2 (sigma_factor sigma_k)^2 (scale + eps))) of every pair.

    Args:
        kps_a: (A, K, D) poses, D >= 2 (x, y first; further columns such as scores are ignored).
        kps_b: (B, K, D) poses.
        sigmas: (K,) OKS sigmas.
        scales: object scale (area) of each pair, broadcastable to (A, B): e.g. (B,) for the b poses'
            areas, (A, B) for a pairwise rule.
        sigma_factor: f of the module docstring (2: COCO's published sigmas; 1: sigmas already scaled).
        eps: added to every scale (COCO's `np.spacing(1)`; 0 for none).
        min_denominator: lower bound of the denominator D_k, or None.

    Returns:
        (A, B, K) similarities in [0, 1].
    """
    sq_dist = ((kps_a[:, None, :, :2] - kps_b[None, :, :, :2]) ** 2).sum(-1)  # (A, B, K)
    var = (sigma_factor * sigmas) ** 2  # (K,)
    scale = scales + eps  # broadcastable to (A, B)
    denominator = 2.0 * var * scale[..., None]  # (A, B, K): a product, so its order does not matter
    if min_denominator is not None:
        denominator = _at_least(denominator, min_denominator)
    return _exp(-(sq_dist / denominator))


def masked_keypoint_mean(similarities: Array, valid: Optional[Array] = None) -> Tuple[Array, Array]:
    """Mean over the last axis (keypoints) of the similarities where `valid`, 0 where no keypoint is.

    Args:
        similarities: (..., K) per-keypoint similarities.
        valid: boolean mask broadcastable to `similarities`, or None (every keypoint).

    Returns:
        (mean (...), counts): counts is the number of valid keypoints, `valid.sum(-1)` (K when `valid`
        is None, everywhere).
    """
    if valid is None:
        valid = _all_true(similarities)
    total = _zero_where_not(valid, similarities).sum(-1)
    counts = valid.sum(-1)
    return total / _at_least(counts, 1), counts


def pairwise_oks(kps_a: Array, kps_b: Array, sigmas: Array, scales: Array,
                 valid: Optional[Array] = None, *, sigma_factor: float = 2.0, eps: float = COCO_EPS,
                 min_denominator: Optional[float] = None) -> Tuple[Array, Array]:
    """OKS between every pose of `kps_a` and every pose of `kps_b` (see the module docstring).

    Args:
        kps_a, kps_b, sigmas, scales, sigma_factor, eps, min_denominator: as in
            :func:`keypoint_similarities`.
        valid: boolean mask of the keypoints that take part, broadcastable to (A, B, K), or None (all).

    Returns:
        (oks (A, B), counts): the OKS (0 for a pair without any valid keypoint) and the number of
        valid keypoints of each pair (`valid.sum(-1)`, broadcast as `valid` is).
    """
    similarities = keypoint_similarities(kps_a, kps_b, sigmas, scales, sigma_factor=sigma_factor, eps=eps,
                                         min_denominator=min_denominator)
    return masked_keypoint_mean(similarities, valid)
