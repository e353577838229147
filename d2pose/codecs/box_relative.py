"""Box-relative coordinate codec of the ROI keypoint heads (Keypoint R-CNN with RLE's or Poseur's
regression head) on the `KeypointCodec` contract (`base`): "box_relative".

Shape shorthand: R ROIs, K keypoints.
"""
from typing import Optional, Sequence, Tuple

import torch

from .base import KeypointCodec, register_codec
from .regression import SCORE_FORMS, sigma_to_score

__all__ = ["BoxRelativeCoords"]


@register_codec
class BoxRelativeCoords(KeypointCodec):
    """Box-relative coordinates of the ROI keypoint heads: (x - x0) / (x1 - x0) in [0, 1] inside the
    box, (y - y0) / (y1 - y0) likewise. Targets of training ROIs come from their proposal boxes;
    keypoints outside the box (or unlabelled) get weight 0. The soft-argmax grid is the ROIAlign
    bin centres: bin j of S covers box-relative [j / S, (j + 1) / S] and stands for (j + 0.5) / S.

    `margin`: labelled keypoints up to that many box sizes outside their box keep weight 1
    (MODEL.ROI_REGRESSION.FRAME_MARGIN; :func:`d2pose.modeling.roi_regression.roi_frame_margin`)."""

    name = "box_relative"
    outputs = "coordinates"

    def __init__(self, score_form: str = "rle", score_a: float = 0.2, margin: float = 0.0):
        if score_form not in SCORE_FORMS:
            raise ValueError(f"TEST.KEYPOINT_SCORE must be one of {SCORE_FORMS}, got {score_form!r}")
        self.score_form, self.score_a = score_form, float(score_a)
        self.margin = float(margin)

    @classmethod
    def from_config(cls, cfg):
        return cls(score_form=cfg.TEST.KEYPOINT_SCORE, score_a=cfg.TEST.KEYPOINT_SCORE_A)

    @staticmethod
    def to_box(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Image points (R, K, 2) -> box-relative coordinates inside boxes (R, 4 XYXY)."""
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)
        return (points - boxes[:, None, :2]) / wh[:, None]

    def encode(self, keypoints: torch.Tensor, visible: torch.Tensor, *, boxes: Optional[torch.Tensor] = None,
               areas=None, source_areas=None,
               input_size: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (R, K, 2) in image coordinates with visibility (R, K), and their reference `boxes`
        (R, 4, required) -> targets (R, K, 2) and weights (R, K): 1 for a labelled keypoint inside its
        box grown by `margin` box sizes on every side (box-relative [-margin, 1 + margin]), else 0."""
        boxes = _required_boxes(boxes)
        target = self.to_box(keypoints.to(boxes.dtype), boxes)
        inside = ((target >= -self.margin) & (target <= 1 + self.margin)).all(-1)
        return target, ((visible.to(boxes.dtype) > 0) & inside).float()

    def decode(self, rel: torch.Tensor, *, boxes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Box-relative (R, K, 2) -> image coordinates in `boxes` (R, 4, required; the inverse of
        :meth:`to_box`)."""
        boxes = _required_boxes(boxes)
        return boxes[:, None, :2] + rel * (boxes[:, 2:] - boxes[:, :2])[:, None]

    def score(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma_to_score(sigma, self.score_form, self.score_a)

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        gx = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        gy = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        return gx, gy


def _required_boxes(boxes: Optional[torch.Tensor]) -> torch.Tensor:
    if boxes is None:
        raise ValueError("the box_relative codec encodes and decodes in reference boxes: pass boxes=(R, 4) XYXY")
    return boxes
