"""Keypoint codecs: encoding targets from crop keypoints and decoding model outputs, apart from heads.

* `MSRAHeatmap`: Gaussian heatmaps of SimpleBaseline/HRNet (Xiao et al. 2018), optionally with
  unbiased sub-pixel centres (DARK encoding, Zhang et al. CVPR 2020); heatmap cell u sits at crop
  pixel index u * stride.
* `UDPHeatmap`: unbiased data processing (Huang et al. CVPR 2020): cell u sits at pixel index
  u * (W - 1) / (w - 1), so a flipped crop flips the heatmap exactly.
* `RegressionCoords`: normalised coordinates for regression heads (RLE, Poseur): x / W in [0, 1]
  (or x / W - 0.5 with `centered`, RLE's official form).
* `BoxRelativeCoords`: box-relative coordinates in [0, 1] of the ROI keypoint heads (Keypoint R-CNN).

The contract (`KeypointCodec`): `encode` targets, `decode` outputs to coordinates, `flip_back`
outputs of a mirrored input, `score` keypoints, and `grid` the cell centres a soft-argmax reads, in
the codec's target units. Codecs are registered in `CODEC_REGISTRY` by name ("msra", "udp",
"regression", "box_relative"; the bottom-up centre + offset codec registers beside them) and built
once from the config by `build_codec(cfg)`, the same for the data mapper and the head: a head
declares the codecs it works with (`check_codec`), and a mismatch is an error naming the keys.
Decoding: arg-max with the quarter offset (MSRA), or DARK (Taylor expansion of the log of the
blurred heatmap). All crop coordinates use d2pose's continuous convention (see `d2pose.data`).

Shape shorthand: N crops, K keypoints, h x w heatmap, H x W crop.
"""
import math
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.utils.registry import Registry

__all__ = ["KeypointCodec", "CODEC_REGISTRY", "register_codec", "build_codec", "check_codec", "HeatmapCodec",
           "MSRAHeatmap", "UDPHeatmap", "RegressionCoords", "BoxRelativeCoords", "SCORE_FORMS", "sigma_to_score",
           "dark_refine", "gaussian_blur"]

CODEC_REGISTRY = Registry("KEYPOINT_CODEC")
CODEC_REGISTRY.__doc__ = """Keypoint codecs by their `name` (INPUT.TOPDOWN.CODEC): classes with `from_config(cfg)`."""


def register_codec(cls):
    """Class decorator: registers a KeypointCodec subclass in CODEC_REGISTRY under its `name`."""
    CODEC_REGISTRY._do_register(cls.name, cls)
    return cls

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


class KeypointCodec:
    """What every codec provides (subclasses implement what applies to them).

    name: the registry name. outputs: "heatmaps" or "coordinates" (what a head must predict).
    encode(keypoints (K, 2), visible (K,)) -> (target, weight (K,)) in the codec's target units;
    decode(outputs) -> coordinates (and, for heatmaps, scores); flip_back(outputs, flip_indices) ->
    the outputs of a mirrored input in the original frame (exact); score(...) -> (R, K) keypoint
    scores; grid(h, w, stride, device) -> (grid_x (w,), grid_y (h,)): the cell centres of an
    (h, w) map of `stride`, in target units, for a soft-argmax (:func:`d2pose.modeling.integral.soft_argmax`).
    """

    name = ""
    outputs = ""

    @classmethod
    def from_config(cls, cfg):
        raise NotImplementedError

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"codec {self.name!r} has no soft-argmax grid")


def build_codec(cfg) -> KeypointCodec:
    """The codec named by INPUT.TOPDOWN.CODEC, built from the config (mapper and head alike)."""
    name = cfg.INPUT.TOPDOWN.CODEC
    if name not in CODEC_REGISTRY:
        raise ValueError(f"INPUT.TOPDOWN.CODEC must be one of {sorted(k for k, _ in CODEC_REGISTRY)}, got {name!r}")
    return CODEC_REGISTRY.get(name).from_config(cfg)


def check_codec(codec: KeypointCodec, supported: Sequence[str], head: str, key: str = "INPUT.TOPDOWN.CODEC") -> None:
    """Raises ValueError naming `key` when `head` cannot work with `codec`."""
    if codec.name not in supported:
        raise ValueError(f"{head} works with {key} {' or '.join(repr(s) for s in supported)}, but the config "
                         f"gives {codec.name!r}: set {key} to {supported[0]!r}")


class HeatmapCodec(KeypointCodec):
    """Common encode/decode of Gaussian heatmaps; subclasses define the pixel <-> cell mapping
    (`_scale`, or `to_cells` / `to_pixels`) and may replace the rule that drops a keypoint whose
    Gaussian misses the heatmap (`gaussian_misses`)."""

    outputs = "heatmaps"

    @classmethod
    def from_config(cls, cfg):
        t = cfg.INPUT.TOPDOWN
        W, H = (int(v) for v in t.INPUT_SIZE)
        return cls((W, H), (W // t.HEATMAP_STRIDE, H // t.HEATMAP_STRIDE), sigma=t.SIGMA,
                   unbiased=t.UNBIASED or cls is UDPHeatmap, decode=t.DECODE)

    def score(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """(N, K) heatmap maxima."""
        return heatmaps.flatten(2).max(dim=-1).values

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cell centres of the codec's heatmap grid in crop continuous coordinates (stride ignored:
        the heatmap size fixes it)."""
        cells_x = torch.arange(w, dtype=torch.float32, device=device)
        cells_y = torch.arange(h, dtype=torch.float32, device=device)
        scale = self._scale()
        return cells_x / float(scale[0]) + 0.5, cells_y / float(scale[1]) + 0.5

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 unbiased: bool = True, decode: str = "dark", blur_kernel: int = 11):
        """
        Args:
            input_size: crop (W, H).
            heatmap_size: heatmap (w, h).
            sigma: Gaussian standard deviation in heatmap cells.
            unbiased: Gaussian centred at the exact sub-cell position (else at the nearest cell).
            decode: "dark" or "argmax" (arg-max plus a quarter-cell shift towards the higher
                neighbour).
            blur_kernel: DARK's Gaussian blur kernel size (odd).
        """
        if decode not in ("dark", "argmax"):
            raise ValueError(f"decode must be 'dark' or 'argmax', got {decode!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.unbiased = unbiased
        self.decode_mode = decode
        self.blur_kernel = blur_kernel

    # pixel-index <-> cell mapping: cell = pixel_index * scale (per axis)
    def _scale(self) -> np.ndarray:
        raise NotImplementedError

    def to_cells(self, xy: np.ndarray) -> np.ndarray:
        """Crop continuous coordinates (..., 2) -> heatmap cell coordinates."""
        return (np.asarray(xy, dtype=np.float64) - 0.5) * self._scale()

    def to_pixels(self, cells):
        """Heatmap cell coordinates (..., 2) (numpy or torch) -> crop continuous coordinates."""
        scale = self._scale()
        if isinstance(cells, torch.Tensor):
            return cells / torch.as_tensor(scale, dtype=cells.dtype, device=cells.device) + 0.5
        return np.asarray(cells, dtype=np.float64) / scale + 0.5

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Gaussian heatmaps of crop keypoints.

        Args:
            keypoints: (K, 2) crop coordinates.
            visible: (K,) bool or {0, 1, 2}: keypoints with value 0 get an empty map and weight 0.

        Returns:
            heatmaps (K, h, w) float32 in [0, 1]; weights (K,) float32: 0 for unlabelled keypoints
            and for those whose Gaussian lies entirely outside the heatmap.
        """
        w, h = self.heatmap_size
        K = keypoints.shape[0]
        heatmaps = np.zeros((K, h, w), dtype=np.float32)
        weights = (np.asarray(visible).reshape(-1) > 0).astype(np.float32)
        cells = self.to_cells(keypoints)
        radius = 3.0 * self.sigma
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        for k in range(K):
            if weights[k] == 0:
                continue
            mu = cells[k] if self.unbiased else np.floor(cells[k] + 0.5)
            if self.gaussian_misses(mu, radius):
                weights[k] = 0.0
                continue
            gx = np.exp(-((xs - mu[0]) ** 2) / (2 * self.sigma**2))
            gy = np.exp(-((ys - mu[1]) ** 2) / (2 * self.sigma**2))
            if not self.unbiased:  # the classic truncated (6 sigma + 1) window
                gx[np.abs(xs - mu[0]) > radius] = 0
                gy[np.abs(ys - mu[1]) > radius] = 0
            heatmaps[k] = np.outer(gy, gx)
        return heatmaps, weights

    def gaussian_misses(self, mu: np.ndarray, radius: float) -> bool:
        """Whether the Gaussian of a keypoint at cell `mu` (2,) lies entirely off the heatmap, its
        3 sigma `radius` included (`encode` then gives the keypoint an empty map and weight 0)."""
        w, h = self.heatmap_size
        return bool(mu[0] + radius < 0 or mu[1] + radius < 0 or mu[0] - radius >= w or mu[1] - radius >= h)

    def encode_torch(self, coords: torch.Tensor, weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unbiased Gaussian heatmaps of a batch, in torch (on the tensors' device), for heads that
        derive heatmap targets from regression targets.

        Args:
            coords: (N, K, 2) crop-normalised coordinates x / W, y / H.
            weights: (N, K) keypoint weights.

        Returns:
            heatmaps (N, K, h, w) and weights (N, K), as `encode` with `unbiased=True` gives them
            (weight 0 when the Gaussian lies entirely outside the heatmap).
        """
        w, h = self.heatmap_size
        size = torch.tensor(self.input_size, dtype=coords.dtype, device=coords.device)
        scale = torch.as_tensor(self._scale(), dtype=coords.dtype, device=coords.device)
        cells = (coords * size - 0.5) * scale  # (N, K, 2)
        xs = torch.arange(w, dtype=coords.dtype, device=coords.device)
        ys = torch.arange(h, dtype=coords.dtype, device=coords.device)
        gx = torch.exp(-((xs - cells[..., :1]) ** 2) / (2 * self.sigma**2))  # (N, K, w)
        gy = torch.exp(-((ys - cells[..., 1:]) ** 2) / (2 * self.sigma**2))  # (N, K, h)
        r = 3.0 * self.sigma
        inside = ((cells + r >= 0) & (cells - r < torch.tensor([w, h], dtype=coords.dtype, device=coords.device))).all(-1)
        weights = weights * inside.to(weights.dtype)
        heatmaps = gy[..., :, None] * gx[..., None, :] * (weights > 0)[..., None, None].to(coords.dtype)
        return heatmaps, weights

    def decode(self, heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keypoints from heatmaps.

        Args:
            heatmaps: (N, K, h, w).

        Returns:
            coordinates (N, K, 2) in crop continuous coordinates; scores (N, K) (heatmap maxima).
        """
        N, K, h, w = heatmaps.shape
        flat = heatmaps.reshape(N, K, -1)
        scores, idx = flat.max(dim=-1)
        cells = torch.stack([idx % w, idx // w], dim=-1).to(heatmaps.dtype)
        if self.decode_mode == "dark":
            cells = dark_refine(heatmaps, cells, self.blur_kernel)
        else:
            cells = _quarter_offset(heatmaps, cells)
        return self.to_pixels(cells), scores

    def flip_back(self, heatmaps: torch.Tensor, flip_indices: Sequence[int], shift: str = "exact") -> torch.Tensor:
        """Heatmaps predicted on a mirrored crop, mapped back onto the original crop.

        Mirroring maps crop x to W - x, i.e. cell u to c - u with c = (w - 1) + delta; delta is
        0 for UDP and 1 - 1/stride for MSRA. Args: heatmaps (N, K, h, w); shift: "exact"
        (linear interpolation by delta), "cell" (shift by one whole cell, HRNet's flip test) or
        "none" (TransPose's official flip test).
        """
        out = heatmaps.flip(-1)[:, list(flip_indices)]
        if shift == "none":
            return out
        if shift == "cell":
            delta = 1.0
        elif shift == "exact":
            delta = float(self._flip_delta())
        else:
            raise ValueError(f"shift must be 'exact', 'cell' or 'none', got {shift!r}")
        if delta == 0.0:
            return out
        # out(u) <- F(u - delta) by linear interpolation, zero beyond the left edge
        prev = F.pad(out, (1, 0))[..., :-1]
        return (1.0 - delta) * out + delta * prev

    def _flip_delta(self) -> float:
        a = self._scale()[0]
        c = a * self.input_size[0] - a  # a * W + 2 * b with b = -0.5 * a
        return c - (self.heatmap_size[0] - 1)


def _quarter_offset(heatmaps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Moves each arg-max a quarter cell towards its higher neighbour (SimpleBaseline)."""
    N, K, h, w = heatmaps.shape
    x, y = cells[..., 0].long(), cells[..., 1].long()
    hm = heatmaps.reshape(N * K, h, w)
    i = torch.arange(N * K, device=heatmaps.device)
    xf, yf = x.reshape(-1), y.reshape(-1)
    inner_x = (xf > 0) & (xf < w - 1)
    inner_y = (yf > 0) & (yf < h - 1)
    dx = hm[i, yf, (xf + 1).clamp(max=w - 1)] - hm[i, yf, (xf - 1).clamp(min=0)]
    dy = hm[i, (yf + 1).clamp(max=h - 1), xf] - hm[i, (yf - 1).clamp(min=0), xf]
    shift = torch.stack([torch.sign(dx) * inner_x, torch.sign(dy) * inner_y], -1) * 0.25
    return cells + shift.reshape(N, K, 2).to(cells.dtype)


def gaussian_blur(heatmaps: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """Per-map Gaussian blur preserving each map's maximum (DARK's modulation); sigma follows
    OpenCV's rule for kernel size k: 0.3 * ((k - 1) / 2 - 1) + 0.8."""
    N, K, h, w = heatmaps.shape
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(-r, r + 1, dtype=heatmaps.dtype, device=heatmaps.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = heatmaps.reshape(N * K, 1, h, w)
    # separable blur with zero padding (as OpenCV's BORDER_CONSTANT after padding)
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r)), g.view(1, 1, -1, 1))
    x = x.reshape(N, K, h, w)
    peak_in = heatmaps.reshape(N, K, -1).amax(-1, keepdim=True)
    peak_out = x.reshape(N, K, -1).amax(-1, keepdim=True).clamp_min(1e-12)
    return (x.reshape(N, K, -1) * peak_in / peak_out).reshape(N, K, h, w)


def dark_refine(heatmaps: torch.Tensor, cells: torch.Tensor, blur_kernel: int = 11) -> torch.Tensor:
    """DARK sub-cell refinement: one Newton step on log(blurred heatmap) at the arg-max.

    Args:
        heatmaps: (N, K, h, w); cells: (N, K, 2) integer arg-max positions (x, y).

    Returns:
        refined (N, K, 2) cell coordinates.
    """
    N, K, h, w = heatmaps.shape
    hm = heatmaps if blur_kernel <= 1 else gaussian_blur(heatmaps, blur_kernel)
    logh = hm.clamp_min(1e-10).log()
    # pad by one (replicate) so that the 3x3 stencil exists at the border
    logp = F.pad(logh.reshape(N * K, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(N * K, h + 2, w + 2)
    i = torch.arange(N * K, device=heatmaps.device)
    x = cells[..., 0].long().reshape(-1) + 1
    y = cells[..., 1].long().reshape(-1) + 1

    def at(dx, dy):
        return logp[i, y + dy, x + dx]

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = at(1, 0) - 2 * c + at(-1, 0)
    dyy = at(0, 1) - 2 * c + at(0, -1)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (det.abs() > 1e-12) & (dxx < 0) & (dyy < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    # offset = -Hessian^-1 * gradient
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(-dxy * dx + dxx * dy) / safe
    off = torch.stack([torch.where(ok, ox, 0 * ox), torch.where(ok, oy, 0 * oy)], -1).clamp(-1.0, 1.0)
    return cells + off.reshape(N, K, 2).to(cells.dtype)


@register_codec
class MSRAHeatmap(HeatmapCodec):
    """Heatmaps whose cell u sits at crop pixel index u * stride (stride = W / w)."""

    name = "msra"

    def _scale(self) -> np.ndarray:
        return np.array([self.heatmap_size[0] / self.input_size[0], self.heatmap_size[1] / self.input_size[1]])


@register_codec
class UDPHeatmap(HeatmapCodec):
    """Unbiased data processing: cell u sits at pixel index u * (W - 1) / (w - 1)."""

    name = "udp"

    def _scale(self) -> np.ndarray:
        (W, H), (w, h) = self.input_size, self.heatmap_size
        return np.array([(w - 1) / max(W - 1, 1), (h - 1) / max(H - 1, 1)])


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

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(K, 2) crop coordinates -> normalised (K, 2) float32 and weights (K,): 0 for unlabelled
        keypoints and (unless `supervise_outside`) for keypoints outside the crop."""
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

    def decode(self, coords: torch.Tensor) -> torch.Tensor:
        """Normalised (..., 2) -> crop coordinates."""
        size = torch.as_tensor(self.input_size, dtype=coords.dtype, device=coords.device)
        return (coords + (0.5 if self.centered else 0.0)) * size + self._shift


@register_codec
class BoxRelativeCoords(KeypointCodec):
    """Box-relative coordinates of the ROI keypoint heads: (x - x0) / (x1 - x0) in [0, 1] inside the
    box, (y - y0) / (y1 - y0) likewise. Targets of training ROIs come from their proposal boxes;
    keypoints outside the box (or unlabelled) get weight 0. The soft-argmax grid is the ROIAlign
    bin centres: bin j of S covers box-relative [j / S, (j + 1) / S] and stands for (j + 0.5) / S."""

    name = "box_relative"
    outputs = "coordinates"

    def __init__(self, score_form: str = "rle", score_a: float = 0.2):
        if score_form not in SCORE_FORMS:
            raise ValueError(f"TEST.KEYPOINT_SCORE must be one of {SCORE_FORMS}, got {score_form!r}")
        self.score_form, self.score_a = score_form, float(score_a)

    @classmethod
    def from_config(cls, cfg):
        return cls(score_form=cfg.TEST.KEYPOINT_SCORE, score_a=cfg.TEST.KEYPOINT_SCORE_A)

    @staticmethod
    def to_box(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Image points (R, K, 2) -> box-relative coordinates inside boxes (R, 4 XYXY)."""
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)
        return (points - boxes[:, None, :2]) / wh[:, None]

    def encode(self, keypoints: torch.Tensor, boxes: torch.Tensor,
               margin: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (R, K, 3: x, y, visibility) in image coordinates and boxes (R, 4) -> targets
        (R, K, 2) and weights (R, K): 1 for a labelled keypoint inside its box grown by `margin`
        box sizes on every side (box-relative [-margin, 1 + margin]), else 0."""
        kps = keypoints.to(boxes.dtype)
        target = self.to_box(kps[..., :2], boxes)
        inside = ((target >= -margin) & (target <= 1 + margin)).all(-1)
        return target, ((kps[..., 2] > 0) & inside).float()

    def decode(self, rel: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Box-relative (R, K, 2) -> image coordinates (inverse of :meth:`to_box`)."""
        return boxes[:, None, :2] + rel * (boxes[:, 2:] - boxes[:, :2])[:, None]

    def score(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma_to_score(sigma, self.score_form, self.score_a)

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        gx = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        gy = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        return gx, gy
