"""Base classes of the top-down heads (mmpose 1.x's `BaseHead` split, `mmpose/models/heads/base_head.py`):
`TopDownHead` states the contract every head in TOPDOWN_HEAD_REGISTRY keeps; `RegressionTopDownHead`
holds what the coordinate-regression heads (RLE's, Poseur's) share: decoding through the
"regression" codec, keypoint scores from sigma and the flip-test fusion of (mu, sigma).

Shape shorthand: R crops, K keypoints.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ...codecs import KeypointCodec
from ..rle_output import FLIP_FUSE_MODES, fuse_flip_views

__all__ = ["TopDownHead", "RegressionTopDownHead"]

Outputs = Dict[str, torch.Tensor]


class TopDownHead(nn.Module):
    """A top-down head: backbone features of R person crops in, keypoints in crop pixels out.

    The meta-architecture (`d2pose.modeling.meta_arch.topdown`) calls, in this order:

    * ``forward(features) -> outputs``: features maps names to (R, C, h, w) backbone maps; outputs is
      a dict of raw tensors with the crop batch first, in the units of the head's `codec`.
    * training: ``losses(outputs, batched_inputs) -> {name: scalar}``; each input carries the codec's
      "target" (e.g. (K, 2) or (K, h, w)) and "target_weight" (K,).
    * inference with the flip test: ``flip_fuse(outputs, flipped, flip_indices) -> outputs`` of the
      un-flipped crops, from the outputs of the crops and of their mirrors (keypoint k of a mirror is
      flip_indices[k] of the crop).
    * inference: ``predict(outputs) -> (coords (R, K, 2) continuous crop pixels, scores (R, K),
      extras {name: (R, ...)})``; the extras become `Instances` fields.

    Attributes every head sets: `num_keypoints` (K) and `codec` (its `KeypointCodec`).
    """

    num_keypoints: int
    codec: KeypointCodec

    def forward(self, features: Dict[str, torch.Tensor]) -> Outputs:
        raise NotImplementedError

    def losses(self, outputs: Outputs, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, outputs: Outputs) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        raise NotImplementedError

    def flip_fuse(self, outputs: Outputs, flipped: Outputs, flip_indices: Sequence[int]) -> Outputs:
        raise NotImplementedError


class RegressionTopDownHead(TopDownHead):
    """A head regressing "coords" (R, K, 2) in the regression codec's normalised units with a scale
    "sigma" (R, K, 2): decoding, scores from sigma and the flip fusion of the two views.

    Args:
        flip_fuse_mode: TEST.KEYPOINT_FLIP_FUSE, one of `flip_fuse_modes` ("mean" or "sigma", see
            :func:`d2pose.modeling.rle_output.fuse_flip_views`; a subclass may add its own and handle
            them in its `flip_fuse`).
    """

    def __init__(self, *, flip_fuse_mode: str = "mean", flip_fuse_modes: Sequence[str] = FLIP_FUSE_MODES):
        super().__init__()
        if flip_fuse_mode not in flip_fuse_modes:
            raise ValueError(f"TEST.KEYPOINT_FLIP_FUSE must be one of {tuple(flip_fuse_modes)} for "
                             f"{type(self).__name__}, got {flip_fuse_mode!r}")
        self.flip_fuse_mode = flip_fuse_mode

    def predict(self, outputs: Outputs) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """coords (R, K, 2) in crop pixels, scores (R, K), extras {"pred_keypoint_sigmas"}. Scores are
        the codec's (TEST.KEYPOINT_SCORE from sigma), or "scores" when a flip fusion gave them."""
        coords = self.codec.decode(outputs["coords"])
        scores = outputs.get("scores")
        if scores is None:
            scores = self.codec.score(outputs["sigma"])
        return coords, scores, {"pred_keypoint_sigmas": outputs["sigma"]}

    def flipped_back(self, flipped: Outputs, flip_indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The mirrors' (coords, sigma) in the crops' frame: coords through the codec's exact flip-back,
        sigma with the keypoints swapped."""
        return self.codec.flip_back(flipped["coords"], flip_indices), flipped["sigma"][:, list(flip_indices)]

    def flip_fuse(self, outputs: Outputs, flipped: Outputs, flip_indices: Sequence[int]) -> Outputs:
        """The views' (coords, sigma) fused by `flip_fuse_mode` ("mean" or "sigma")."""
        coords_f, sigma_f = self.flipped_back(flipped, flip_indices)
        coords, sigma = fuse_flip_views(outputs["coords"], outputs["sigma"], coords_f, sigma_f, self.flip_fuse_mode)
        return dict(coords=coords, sigma=sigma)
