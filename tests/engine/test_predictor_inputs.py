"""What a new user hands a predictor: Detectron2's `DefaultPredictor` (with d2pose's safeguards) and
d2pose's `PosePredictor` refuse a path, a grayscale (H, W) array, an empty image and a float image in
[0, 1] with a message saying what they take (an (H, W, 3) uint8 BGR array) and how to convert, before
Detectron2's `__call__` fails on them with an IndexError / TypeError or reads them silently."""
import os

import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor

import d2pose
from d2pose.config import get_d2pose_cfg
from d2pose.data import prepare_image
from d2pose.engine import PosePredictor
from d2pose.engine.predictor import check_predictor_image
from d2pose.safeguards import installed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")

#: (input, error type, what the message must say)
BAD_INPUTS = [
    ("photo.jpg", TypeError, r"not a path \('photo.jpg'\): read the file with d2pose.data.read_image"),
    (np.zeros((12, 10), np.uint8), ValueError, r"a grayscale image of shape \(12, 10\): d2pose.data.prepare_image"),
    (np.zeros((12, 10, 4), np.uint8), ValueError, r"shape \(12, 10, 4\).*BGRA"),
    (np.zeros((0, 10, 3), np.uint8), ValueError, r"an empty image \(0 x 10\)"),
    (np.full((12, 10, 3), 0.5, np.float32), ValueError, r"values in \[0, 1\]: scale it to 0-255"),
    (np.full((12, 10, 3), 4000, np.uint16), ValueError, r"values 4000-4000.*16-bit"),
    (np.full((12, 10, 3), np.nan, np.float32), ValueError, "NaN or infinite"),
    (torch.zeros(3, 12, 10), TypeError, r"got torch.Tensor"),
]


@pytest.fixture(scope="module")
def cfg():
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "TEST.AUTOCAST_DTYPE", "float32", "MODEL.WEIGHTS", ""])
    return cfg


@pytest.mark.parametrize("image,error,message", BAD_INPUTS)
def test_check_names_what_the_predictor_takes(image, error, message):
    with pytest.raises(error, match=message) as e:
        check_predictor_image(image)
    assert "(H, W, 3) uint8 array in BGR order" in str(e.value)


def test_good_inputs_pass():
    for image in (np.zeros((5, 4, 3), np.uint8), np.full((5, 4, 3), 200.0, np.float32),
                  np.zeros((5, 4, 3), np.float32), np.full((5, 4, 3), 255, np.int64), np.zeros((1, 1, 3), np.uint8)):
        check_predictor_image(image)


@pytest.mark.parametrize("predictor_class", [DefaultPredictor, PosePredictor])
def test_predictors_refuse_before_detectron2_fails(cfg, predictor_class):
    assert installed()
    predictor = predictor_class(cfg)
    for image, error, message in BAD_INPUTS[:2] + BAD_INPUTS[4:5]:
        with pytest.raises(error, match=message):
            predictor(image)
    # what the messages point to works, and a proper image is predicted as before
    inst = predictor(prepare_image(np.full((12, 10), 0.5, np.float32)))["instances"]
    assert inst.image_size == (12, 10) and len(inst) == 1


def test_detectron2_as_shipped_without_the_safeguards(cfg):
    """With the safeguards off, DefaultPredictor is Detectron2's: the grayscale array fails inside it."""
    was = installed()
    d2pose.uninstall_safeguards()
    try:
        predictor = DefaultPredictor(cfg)
        with pytest.raises(IndexError):
            predictor(np.zeros((12, 10), np.uint8))
    finally:
        if was:
            d2pose.install_safeguards()
