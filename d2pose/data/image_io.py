"""Images for inference: any array or file -> what Detectron2's `DefaultPredictor` takes.

`DefaultPredictor(cfg)(image)` expects an (H, W, 3) uint8 array in BGR order (it converts to the
model's INPUT.FORMAT itself). Real inputs are not always that: grayscale (H, W) or (H, W, 1)
arrays, RGBA / BGRA (H, W, 4) ones (PNGs with transparency), float images in [0, 1], 16-bit ones.
`prepare_image` turns each into a BGR uint8 (H, W, 3) array and refuses what cannot be an image
with a message saying what is expected; `read_image` reads a file with Detectron2's reader (EXIF
orientation applied, any mode converted) and names the file when it cannot be read. 16-bit and
32-bit grayscale files (PIL modes "I;16", "I", "F", e.g. depth or medical PNGs) are read at full depth
and scaled by `prepare_image`, where Detectron2's reader would clip every value above 255.

    from d2pose.data import prepare_image, read_image
    predictor(prepare_image(gray))            # (H, W) -> (H, W, 3) BGR
    predictor(read_image("photo.png"))        # BGR (H, W, 3), EXIF-rotated
"""
import os
from typing import Optional

import numpy as np
from detectron2.data.detection_utils import read_image as d2_read_image
from PIL import Image, ImageOps

__all__ = ["prepare_image", "read_image"]

#: PIL modes of more than 8 bits per pixel that Image.convert("RGB") clips to 255
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def prepare_image(image, alpha_background: int = 0, input_order: str = "BGR") -> np.ndarray:
    """An (H, W, 3) uint8 BGR array (DefaultPredictor's input) from an image array.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array; uint8, uint16 (scaled by 1/257),
            bool, or float (values in [0, 1] are scaled by 255, others clipped to [0, 255]).
        alpha_background: gray level that transparent pixels of a 4-channel image are blended over.
        input_order: channel order of a 3- or 4-channel `image` ("BGR" as OpenCV reads, or "RGB"
            as PIL reads).
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"the image is empty ({a.shape[0]} x {a.shape[1]})")
    if input_order not in ("BGR", "RGB"):
        raise ValueError(f"input_order must be 'BGR' or 'RGB', got {input_order!r}")
    if a.dtype == np.bool_:
        a = a.astype(np.float64)
    if a.dtype == np.uint16:
        a = a.astype(np.float64) / 257.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError("the image holds NaN or infinite values")
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
    elif a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"unsupported image dtype {a.dtype}")
    a = np.clip(a, 0, 255).astype(np.float64) if a.dtype != np.uint8 else a
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float64) / 255.0
        a = a[:, :, :3] * alpha + float(alpha_background) * (1.0 - alpha)
    if input_order == "RGB":
        a = a[:, :, ::-1]
    return np.ascontiguousarray(np.round(a).astype(np.uint8) if a.dtype != np.uint8 else a)


def _read_high_depth(path: str) -> Optional[np.ndarray]:
    """The (H, W) array of a 16- or 32-bit grayscale file at full depth (EXIF orientation applied;
    16-bit values held in PIL's int32 mode "I" as uint16), or None for any other file."""
    with Image.open(path) as image:
        if image.mode not in _HIGH_DEPTH_MODES:
            return None
        a = np.asarray(ImageOps.exif_transpose(image))
    if a.dtype.kind == "i" and a.size and a.min() >= 0 and a.max() <= np.iinfo(np.uint16).max:
        a = a.astype(np.uint16)  # e.g. a 16-bit PNG that PIL opens in mode "I"
    return a


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """Detectron2's `read_image` (EXIF orientation, any mode converted to `format`), with errors
    that name the file; returns an (H, W, 3) uint8 array (BGR by default, DefaultPredictor's input).
    16-bit grayscale files are scaled to 8 bits (`prepare_image`), not clipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        deep = _read_high_depth(path) if format in ("BGR", "RGB") else None
        image = d2_read_image(path, format=format) if deep is None else prepare_image(deep)
    except Exception as e:  # PIL's UnidentifiedImageError, truncated files, ...
        raise ValueError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e
    return prepare_image(image, input_order="BGR") if image.ndim != 3 or image.shape[2] != 3 else image
