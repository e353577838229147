"""DEKR's pose NMS (Geng et al. CVPR 2021; the LOGO-CAP authors' code keeps it): two poses are
duplicates when more than `num_joints` of their keypoints are closer than `thresh` x the first
pose's keypoint-box diagonal. Used by the bottom-up meta-architecture skeleton.

Shape shorthand: P poses, K keypoints.
"""
from typing import List

import torch

__all__ = ["pose_nms"]


def pose_nms(poses: torch.Tensor, scores: torch.Tensor, thresh: float = 0.05, num_joints: int = 8) -> List[int]:
    """DEKR's pose NMS over (P, K, 2) poses with (P,) scores -> kept indices (in visiting order).

    Pose j duplicates pose i when more than `num_joints` of their keypoints are closer than
    `thresh` x the diagonal of pose i's keypoint box. Poses are visited in order; each unvisited
    pose's duplicate set keeps its best-scoring member (the first on ties) unless that one was
    already suppressed, and suppresses the rest.
    """
    P = poses.shape[0]
    if P == 0:
        return []
    p = poses.double()
    wh = p.amax(1) - p.amin(1)
    diag = (wh ** 2).sum(-1).sqrt()  # (P,)
    dist = (p[:, None] - p[None]).pow(2).sum(-1).sqrt()  # (P, P, K)
    dup = ((dist < thresh * diag[:, None, None]).sum(-1) > num_joints).cpu()
    s = scores.detach().double().cpu()
    ignored, keep = set(), []
    for i in range(P):
        if i in ignored:
            continue
        members = torch.nonzero(dup[i]).flatten().tolist()
        if not members:
            continue
        best = members[int(torch.argmax(s[members]))]
        if best in ignored:
            continue
        keep.append(best)
        ignored.update(members)
    return keep
