"""`PosePredictor`: Detectron2's `DefaultPredictor` that loads MODEL.WEIGHTS with d2pose's checkpointer,
strictly: a missing file is named with its config key, a checkpoint that leaves tensors of the model
unset (or holds others) is refused, and no pickled code runs. MODEL.DEVICE falls back to the CPU where
there is no CUDA (`d2pose.config.resolve_device`).

Its input is Detectron2's: one (H, W, 3) uint8 array in BGR order, as `cv2.imread` gives.
`check_predictor_image` refuses, saying so, what Detectron2's `__call__` would fail on deep inside
(a path, a grayscale (H, W) array: `IndexError`, `TypeError`) or read wrongly without a word (a float
image in [0, 1], a 16-bit one); `PosePredictor` and, with d2pose's safeguards, `DefaultPredictor` call it.
"""
import logging
from typing import Any, Dict

import detectron2.data.transforms as T
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor

from ..checkpoint import PoseCheckpointer, check_weights_file
from ..config import resolve_device
from ..modeling.build import build_model

__all__ = ["EXPECTED_IMAGE", "PosePredictor", "check_predictor_image"]

logger = logging.getLogger("d2pose")

#: what DefaultPredictor (and PosePredictor) take, as the errors of check_predictor_image say it
EXPECTED_IMAGE = ("DefaultPredictor takes one image as an (H, W, 3) uint8 array in BGR order, values 0-255 (as "
                  "cv2.imread reads it; the predictor converts it to the model's cfg.INPUT.FORMAT)")


def _check_type(image: Any) -> None:
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        raise TypeError(f"{EXPECTED_IMAGE}, not a path ({image!r}): read the file with "
                        "d2pose.data.read_image(path) (BGR, EXIF orientation applied) or cv2.imread(path)")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{EXPECTED_IMAGE}; got {type(image).__module__}.{type(image).__name__} "
                        "(np.asarray(image) makes an array; d2pose.data.prepare_image(image, input_order='RGB') "
                        "converts an RGB one)")


def _check_shape(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        kind = "a grayscale image" if image.ndim == 2 else "an array"
        raise ValueError(f"{EXPECTED_IMAGE}; got {kind} of shape {image.shape}: d2pose.data.prepare_image(image) "
                         "converts grayscale (H, W) / (H, W, 1) and BGRA (H, W, 4) arrays")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{EXPECTED_IMAGE}; got an empty image ({image.shape[0]} x {image.shape[1]})")


def _check_values(image: np.ndarray) -> None:
    if image.dtype == np.uint8:
        return
    if np.issubdtype(image.dtype, np.floating):
        low, high = float(image.min()), float(image.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{EXPECTED_IMAGE}; the {image.dtype} image holds NaN or infinite values")
        if low >= 0.0 and 0.0 < high <= 1.0:
            raise ValueError(f"{EXPECTED_IMAGE}; got a {image.dtype} image with values in [0, 1]: scale it to 0-255 "
                             "(image * 255), or d2pose.data.prepare_image(image) does")
        return
    if np.issubdtype(image.dtype, np.integer):
        if int(image.max()) > 255 or int(image.min()) < 0:
            raise ValueError(f"{EXPECTED_IMAGE}; got a {image.dtype} image with values {int(image.min())}-"
                             f"{int(image.max())}: d2pose.data.prepare_image(image) scales a 16-bit image to 0-255")
        return
    raise TypeError(f"{EXPECTED_IMAGE}; got an array of dtype {image.dtype}")


def check_predictor_image(image: Any) -> None:
    """Raises TypeError or ValueError, saying what the predictor takes (:data:`EXPECTED_IMAGE`) and how to
    convert, for an input that is not an (H, W, 3) image of 0-255 values: a path or another object than a
    numpy array, another shape (a grayscale (H, W) array), an empty image, NaN or infinite values, a float
    image with values in [0, 1], integer values outside 0-255. uint8 (H, W, 3) arrays pass without a scan."""
    _check_type(image)
    _check_shape(image)
    _check_values(image)


class PosePredictor(DefaultPredictor):
    """DefaultPredictor (one BGR (H, W, 3) image in, the model's output for it out) whose weights must fit.

    An empty MODEL.WEIGHTS gives an untrained model (tests, export) with a warning; MODEL.DEVICE "cuda"
    on a machine without CUDA runs on the CPU, with a warning.
    """

    def __init__(self, cfg):
        check_weights_file(cfg.MODEL.WEIGHTS)
        # DefaultPredictor.__init__ with PoseCheckpointer(strict=True)
        self.cfg = cfg.clone()  # cfg can be modified by model
        resolve_device(self.cfg)
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        if not cfg.MODEL.WEIGHTS:
            logger.warning("PosePredictor: MODEL.WEIGHTS is empty, the model is untrained (random weights)")
        PoseCheckpointer(self.model, strict=True).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """DefaultPredictor.__call__ (the model's output for one BGR (H, W, 3) image) after
        :func:`check_predictor_image`."""
        check_predictor_image(original_image)
        return super().__call__(original_image)
