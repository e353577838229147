"""The empirical upper bound of a centre-offset pose estimator (LOGO-CAP supplementary Sec. 2).

Each initial pose is expanded into its keypoint expansion maps (S x S meshes, spacing
sigma_k / min sigma network-input pixels); the OKS similarities of every mesh point with every
ground-truth person are summed over the mesh and the keypoints to match the pose to one person, and
each keypoint then moves to its mesh point of highest similarity with that person: the best pose in
the local window. A perfect KAM would find it; its AP bounds what the local search can give.
"""
from typing import Sequence

import numpy as np
import torch

from d2pose.modeling.bottomup import keypoint_expansion

from .meta_arch import mesh_oks

__all__ = ["upper_bound_poses"]


def upper_bound_poses(poses: np.ndarray, gt_keypoints: np.ndarray, gt_areas: np.ndarray, sigmas: Sequence[float],
                      mesh_step: float = 1.0, kem_size: int = 11) -> np.ndarray:
    """Best poses in the keypoint expansion maps of `poses`.

    Args:
        poses: (P, K, 2+) initial poses (image coordinates; extra columns, e.g. scores, are kept).
        gt_keypoints: (G, K, 3) ground truth of the same image (x, y, visibility).
        gt_areas: (G,) ground-truth areas (image pixels).
        sigmas: (K,) OKS sigmas.
        mesh_step: image pixels per network-input pixel (1 / the test resize scale), so that the
            mesh spacing is the model's.
    Returns:
        (P, K, 2+) poses whose keypoints are the matched person's best mesh points (a keypoint the
        person has no label for stays where it was).
    """
    poses = np.asarray(poses, dtype=np.float64)
    out = poses.copy()
    if len(poses) == 0 or len(gt_keypoints) == 0:
        return out
    gt = torch.as_tensor(np.asarray(gt_keypoints, dtype=np.float64))
    areas = torch.as_tensor(np.asarray(gt_areas, dtype=np.float64))
    sig = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
    p = torch.as_tensor(poses[..., :2])
    meshes = p[:, None, None] + (keypoint_expansion(torch.zeros_like(p), sigmas, kem_size) * mesh_step)
    parts, _, _ = mesh_oks(meshes, gt, areas, sig)  # (P, S, S, G, K)
    match = parts.sum(dim=(1, 2, 4)).argmax(-1)  # (P,): the person with the largest summed similarity
    idx = torch.arange(len(poses))
    chosen = parts[idx, :, :, match]  # (P, S, S, K)
    P, S, _, K = chosen.shape
    best = chosen.reshape(P, S * S, K).argmax(1)  # (P, K)
    cells = meshes.reshape(P, S * S, K, 2)
    xy = torch.gather(cells, 1, best[:, None, :, None].expand(P, 1, K, 2))[:, 0]
    labelled = (gt[match][..., 2] > 0).numpy()
    out[..., :2] = np.where(labelled[..., None], xy.numpy(), poses[..., :2])
    return out
