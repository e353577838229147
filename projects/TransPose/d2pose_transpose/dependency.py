"""Dependency and affected areas of predicted keypoints (TransPose paper Sec. 3.3, Eq. 4).

For a keypoint predicted at token i (the token under its heatmap maximum), the dependency area is
J = {j | A[i, j] >= delta}: the image locations whose tokens the last attention layer weighs most
for token i (row i of the head-averaged attention A); the affected area is column i, the locations
token i contributes to. The authors' thresholds: delta = 0.01 for TP-R and 0.00075 for TP-H
(Fig. 6); `DEFAULT_THRESHOLDS`.

Shape shorthand: K keypoints, (h, w) token grid, L = h w tokens.
"""
from typing import Tuple

import torch

__all__ = ["DEFAULT_THRESHOLDS", "keypoint_tokens", "dependency_areas", "affected_areas"]

#: Eq. 4's delta by token stride, as in the authors' figures (TP-R: stride 8, TP-H: stride 4)
DEFAULT_THRESHOLDS = {8: 0.01, 4: 0.00075}


def keypoint_tokens(coords: torch.Tensor, grid: Tuple[int, int], stride: float) -> torch.Tensor:
    """Row-major token index (K,) of each keypoint (K, 2) in crop continuous coordinates: the token
    whose stride x stride cell contains it (clamped to the grid)."""
    h, w = grid
    col = torch.div(coords[:, 0], stride, rounding_mode="floor").long().clamp(0, w - 1)
    row = torch.div(coords[:, 1], stride, rounding_mode="floor").long().clamp(0, h - 1)
    return row * w + col


def _areas(attention: torch.Tensor, tokens: torch.Tensor, grid: Tuple[int, int], threshold: float, rows: bool):
    h, w = grid
    if attention.dim() != 2 or attention.shape[0] != attention.shape[1] or attention.shape[0] != h * w:
        raise ValueError(f"attention must be (L, L) with L = {h} x {w} = {h * w} tokens, got {tuple(attention.shape)}")
    weights = attention[tokens] if rows else attention[:, tokens].t()
    weights = weights.reshape(-1, h, w)
    return weights, weights >= threshold


def dependency_areas(attention: torch.Tensor, tokens: torch.Tensor, grid: Tuple[int, int],
                     threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 for each keypoint token: rows A[i, :] as (K, h, w) maps and their masks A[i, j] >= threshold.

    Args:
        attention: (L, L) head-averaged attention of one crop (a row sums to 1).
        tokens: (K,) token indices of the keypoints (:func:`keypoint_tokens`).
        grid: (h, w) token grid.
        threshold: delta.
    """
    return _areas(attention, tokens, grid, threshold, rows=True)


def affected_areas(attention: torch.Tensor, tokens: torch.Tensor, grid: Tuple[int, int],
                   threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The transpose of :func:`dependency_areas`: columns A[:, i] (how much token i is attended to
    by every token) as (K, h, w) maps and their masks."""
    return _areas(attention, tokens, grid, threshold, rows=False)
