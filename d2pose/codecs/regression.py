"""Normalised-coordinate codec of the regression heads (RLE, Li et al. ICCV 2021; Poseur, Mao et al.
ECCV 2022) on the `KeypointCodec` contract (`base`), and the keypoint score from a predicted sigma.

* `RegressionCoords` ("regression"): x / W in [0, 1] inside the crop (or x / W - 0.5 with
  `centered`, RLE's official form), optionally in the authors' pixel-index convention.
* `sigma_to_score`: the keypoint confidence of a regression head from its sigma (TEST.KEYPOINT_SCORE).

Shape shorthand: N crops, R instances, K keypoints, H x W crop.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .base import KeypointCodec, register_codec

__all__ = ["RegressionCoords", "SCORE_FORMS", "sigma_to_score"]

#: values of TEST.KEYPOINT_SCORE: keypoint score from a regression head's sigma
SCORE_FORMS = ("rle", "poseur")


def sigma_to_score(sigma: torch.Tensor, form: str = "rle", a: float = 0.2) -> torch.Tensor:
    """Keypoint confidence from sigma (R, K, 2) in normalised units.

    "rle": mean over x, y of 1 - sigma (RLE, Eq. 9 of the paper's code); "poseur": prod over x, y of
    1 - exp(-a / sigma) (Poseur Eq. 8: the probability mass of the Laplace within +-a).
    """
    if form == "rle":
        return (1.0 - sigma).mean(dim=-1)
    if form == "poseur":
        return (1.0 - torch.exp(-a / sigma.clamp_min(1e-9))).prod(dim=-1)
    raise ValueError(f"TEST.KEYPOINT_SCORE must be one of {SCORE_FORMS}, got {form!r}")



@register_codec
class RegressionCoords(KeypointCodec):
    """Normalised coordinates for regression heads: x / W (in [0, 1] inside the crop), or
    x / W - 0.5 with `centered` (RLE's official targets).

    With `pixel_index`, coordinates are normalised in the pixel-index convention of the authors' RLE
    code (pixel i centred at x = i, so x_index = x - 0.5 and a mirror maps x_index to W - 1 - x_index):
    models converted from their checkpoints predict in it, and decoding/flip-back must follow.

    `score_form` / `score_a`: the keypoint score from a head's sigma (TEST.KEYPOINT_SCORE / _A).

    With `supervise_outside`, labelled keypoints outside the crop keep their weight 1 (the authors'
    RLE training code: its visibility weight ignores the crop), instead of 0.
    """

    name = "regression"
    outputs = "coordinates"

    def __init__(self, input_size: Sequence[int], centered: bool = False, pixel_index: bool = False,
                 score_form: str = "rle", score_a: float = 0.2, supervise_outside: bool = False):
        if score_form not in SCORE_FORMS:
            raise ValueError(f"TEST.KEYPOINT_SCORE must be one of {SCORE_FORMS}, got {score_form!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.centered = centered
        self.pixel_index = pixel_index
        self.supervise_outside = bool(supervise_outside)
        self.score_form, self.score_a = score_form, float(score_a)

    @classmethod
    def from_config(cls, cfg):
        t = cfg.INPUT.TOPDOWN
        return cls(tuple(t.INPUT_SIZE), centered=t.REGRESSION_CENTERED, pixel_index=t.REGRESSION_PIXEL_INDEX,
                   score_form=cfg.TEST.KEYPOINT_SCORE, score_a=cfg.TEST.KEYPOINT_SCORE_A,
                   supervise_outside=t.REGRESSION_SUPERVISE_OUTSIDE)

    @property
    def _shift(self) -> float:
        return 0.5 if self.pixel_index else 0.0

    def score(self, sigma: torch.Tensor) -> torch.Tensor:
        """(R, K) keypoint scores from sigma (R, K, 2) (see :func:`sigma_to_score`)."""
        return sigma_to_score(sigma, self.score_form, self.score_a)

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cell centres of an (h, w) crop map of `stride`: cell j stands for continuous crop pixel
        (j + 0.5) * stride, in normalised target units (float32)."""
        W, H = self.input_size
        ctr = 0.5 if self.centered else 0.0
        ar = lambda n: torch.arange(n, device=device, dtype=torch.float32) + 0.5  # noqa: E731
        return (ar(w) * float(stride) - self._shift) / W - ctr, (ar(h) * float(stride) - self._shift) / H - ctr

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, *, boxes=None, areas=None, source_areas=None,
               input_size: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(K, 2) crop coordinates -> normalised (K, 2) float32 and weights (K,): 0 for unlabelled
        keypoints and (unless `supervise_outside`) for keypoints outside the crop. The keyword-only
        context is not read."""
        size = np.asarray(self.input_size, dtype=np.float64)
        inside = np.all((keypoints >= 0) & (keypoints <= size), axis=-1) | self.supervise_outside
        norm = (np.asarray(keypoints, dtype=np.float64) - self._shift) / size
        weights = ((np.asarray(visible).reshape(-1) > 0) & inside).astype(np.float32)
        return (norm - (0.5 if self.centered else 0.0)).astype(np.float32), weights

    def flip_back(self, coords: torch.Tensor, flip_indices: Sequence[int]) -> torch.Tensor:
        """Normalised (N, K, 2) predicted on a mirrored crop -> the original crop (exact)."""
        out = coords[:, list(flip_indices)].clone()
        # continuous: x -> W - x; pixel index: x -> W - 1 - x (in units of W)
        mirror = 1.0 - 2.0 * self._shift / self.input_size[0]
        out[..., 0] = (mirror - 1.0 - out[..., 0]) if self.centered else (mirror - out[..., 0])
        return out

    def decode(self, coords: torch.Tensor, *, boxes=None) -> torch.Tensor:
        """Normalised (..., 2) -> crop coordinates (`boxes` is not read)."""
        size = torch.as_tensor(self.input_size, dtype=coords.dtype, device=coords.device)
        return (coords + (0.5 if self.centered else 0.0)) * size + self._shift
