"""The keypoint codec contract (`KeypointCodec`) and the codec registry, after mmpose 1.x's split of
target encoding and decoding from the heads (`mmpose/codecs/base.py`).

The contract, stated once for every codec:

    encode(keypoints, visible, *, boxes=None, areas=None, source_areas=None, input_size=None)
        -> (target, weight)
    decode(outputs, *, boxes=None) -> coordinates, or (coordinates, what else the outputs tell)

* `keypoints` (..., K, 2) are in d2pose's continuous coordinates (pixel i covers [i, i + 1); see
  `d2pose.data`) of the frame the codec encodes in: the crop (top-down codecs), the image
  (box-relative) or the network input (centre + offset). `visible` (..., K): > 0 for a labelled
  keypoint; unlabelled keypoints get weight 0.
* The keyword-only context is read by the codecs that need it and ignored by the others: `boxes`
  (R, 4) XYXY reference boxes (box-relative), `areas` (P,) person areas in the frame's pixels and
  `source_areas` (P,) the same people's areas in the source image (centre + offset: offset weights
  and its small-person rule), `input_size` (W, H) of the frame when it changes per sample (bottom-up
  inputs; default the codec's own).
* `target` is the codec's target (an array, or a dict of named arrays for codecs with several
  outputs) and `weight` its per-keypoint (or per-cell) weights. `decode` maps a model's outputs back
  to coordinates (..., K, 2) in the same frame and convention; codecs whose outputs carry more (heatmap
  maxima, person centres) return a tuple whose first item the coordinates are.
* Numpy in and out for data-side codecs (heatmap, regression, centre + offset encoding); torch for
  box-relative encoding (it runs on the ROI head's tensors) and for every `decode`.

Optional parts of the contract: `flip_back(outputs, flip_indices)` (the outputs of a mirrored input in
the original frame), `score(...)` ((R, K) keypoint scores) and `grid(h, w, stride, device)` (the cell
centres of an (h, w) map in target units, for a soft-argmax, :func:`d2pose.modeling.integral.soft_argmax`).

Codecs are registered in `CODEC_REGISTRY` by their `name` and built from the config by
`build_codec(cfg)`, the same for the data mapper and the head; a head declares the codecs it works
with (`check_codec`), and a mismatch is an error naming the keys.
"""
import abc
from typing import Any, Optional, Sequence, Tuple

import torch
from detectron2.utils.registry import Registry

__all__ = ["KeypointCodec", "CODEC_REGISTRY", "register_codec", "build_codec", "check_codec"]

CODEC_REGISTRY = Registry("KEYPOINT_CODEC")
CODEC_REGISTRY.__doc__ = """Keypoint codecs by their `name` (INPUT.TOPDOWN.CODEC for the top-down ones):
`KeypointCodec` subclasses with `from_config(cfg)`."""


class KeypointCodec(abc.ABC):
    """A keypoint codec; see the module docstring for the contract.

    name: the registry name. outputs: what a model must predict for it ("heatmaps", "coordinates" or
    "center_offsets").
    """

    name = ""
    outputs = ""

    @classmethod
    def from_config(cls, cfg) -> "KeypointCodec":
        raise NotImplementedError(f"codec {cls.name!r} cannot be built from a config")

    @abc.abstractmethod
    def encode(self, keypoints, visible, *, boxes=None, areas=None, source_areas=None,
               input_size: Optional[Sequence[int]] = None) -> Tuple[Any, Any]:
        """Targets and weights of `keypoints` (..., K, 2) with `visible` (..., K)."""

    @abc.abstractmethod
    def decode(self, outputs, *, boxes=None):
        """Coordinates (..., K, 2) from a model's outputs (or a tuple that starts with them)."""

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"codec {self.name!r} has no soft-argmax grid")


def register_codec(cls):
    """Class decorator: registers a KeypointCodec subclass in CODEC_REGISTRY under its `name`."""
    if not (isinstance(cls, type) and issubclass(cls, KeypointCodec)):
        raise TypeError(f"{cls!r} is not a KeypointCodec subclass")
    CODEC_REGISTRY._do_register(cls.name, cls)
    return cls


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
