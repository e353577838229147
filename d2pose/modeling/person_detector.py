"""The person detector of the top-down pipeline (MODEL.TOPDOWN.DETECTOR).

Any Detectron2 detection model finds the people that a crop-based pose model (RLE, Poseur,
TransPose) then crops: its config is a file path or a model-zoo name such as
``COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml`` (resolved through ``detectron2.model_zoo``), its
weights a file path, a ``detectron2://`` / ``https://`` URL or a model-zoo name (its trained
checkpoint); d2pose's own detector configs resolve by name too (``Detectors/synthetic_person_faster_rcnn.yaml``).
The pose config chooses which class is a person (``CLASS_INDEX``, 0 for COCO
detectors), the score threshold (applied to the boxes returned; the detector's own test threshold,
whichever kind it is: ROI heads, RetinaNet, FCOS, is lowered to it), an extra NMS over the person
boxes and the most people per image.

The detector keeps its own input conventions (``INPUT.FORMAT``, ``MIN_SIZE_TEST`` /
``MAX_SIZE_TEST`` resize, pixel statistics): `PersonDetector` converts the pose model's image to
them and returns boxes in the frame of the image it was given. It is frozen and always in eval mode,
and its weights are not part of the pose model's state_dict (pose checkpoints stay pose-only; the
detector is loaded from its own weights each time the pose model is built).
"""
import logging
import os
from typing import List, Tuple

import numpy as np
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.layers import batched_nms
from detectron2.modeling import build_model as d2_build_model
from torch import nn

from .. import model_zoo as d2pose_zoo
from ..config import get_d2pose_cfg
from .build import apply_memory_format

__all__ = ["PersonDetector", "build_person_detector", "lower_score_thresholds", "resolve_detector_config",
           "resolve_detector_weights"]

logger = logging.getLogger(__name__)

_KEY = "MODEL.TOPDOWN.DETECTOR"


def resolve_detector_config(name: str) -> str:
    """A detector config: an existing file, a d2pose config name (d2pose.model_zoo) or a Detectron2
    model-zoo name (its config file)."""
    if os.path.isfile(name):
        return name
    try:  # d2pose's own configs, e.g. "Detectors/synthetic_person_faster_rcnn.yaml"
        return d2pose_zoo.get_config_file(name)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError):
        pass
    try:
        path = model_zoo.get_config_file(name)
    except RuntimeError as e:
        raise FileNotFoundError(f"{_KEY}.CONFIG_FILE {name!r} is neither a file nor a Detectron2 model-zoo config "
                                f"(e.g. 'COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml')") from e
    return path


def resolve_detector_weights(weights: str, config_name: str) -> str:
    """A local file or URL as is; a model-zoo config name -> its trained checkpoint's URL."""
    if not weights or os.path.isfile(weights) or "://" in weights:
        return weights
    if weights.endswith((".yaml", ".py")):
        try:
            return model_zoo.get_checkpoint_url(weights)
        except RuntimeError as e:
            raise FileNotFoundError(f"{_KEY}.WEIGHTS {weights!r} is neither a file nor a model-zoo name") from e
    raise FileNotFoundError(f"{_KEY}.WEIGHTS {weights!r} does not exist (detector config {config_name!r})")


class PersonDetector(nn.Module):
    """A frozen Detectron2 detector returning person boxes; see the module docstring."""

    def __init__(self, model: nn.Module, *, input_format: str, min_size: int, max_size: int, class_index: int = 0,
                 score_thresh: float = 0.05, nms_thresh: float = 1.0, max_people: int = 100):
        """
        Args:
            model: a Detectron2 detector (list-of-dicts call returning {"instances": Instances}).
            input_format: the detector's INPUT.FORMAT ("BGR" / "RGB").
            min_size, max_size: the detector's test-time resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST).
            class_index: the detector's class id of a person.
            score_thresh: boxes scoring below are dropped.
            nms_thresh: IoU threshold of an NMS over the person boxes (>= 1: none beyond the detector's).
            max_people: the most boxes kept per image (highest scores first).
        """
        super().__init__()
        self.model = model
        self.input_format = input_format
        self.resize = T.ResizeShortestEdge([min_size, min_size], max_size)
        self.class_index = int(class_index)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.max_people = int(max_people)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):  # always in eval mode (frozen BN, inference outputs)
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: List[torch.Tensor], image_format: str) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """images: (3, H, W) tensors in `image_format` (0-255). Returns per image (boxes (R, 4) XYXY
        in that image's frame, scores (R,)), float32 on the CPU, highest score first."""
        inputs = []
        for image in images:
            array = image.permute(1, 2, 0).cpu().numpy()
            if array.dtype != np.uint8:
                # DefaultPredictor gives float32: Detectron2 resizes uint8 through PIL (antialiased,
                # as in the detector's training and evaluation) but float without antialiasing
                array = np.clip(array, 0, 255).round().astype(np.uint8)
            if image_format != self.input_format:
                array = array[:, :, ::-1]
            H, W = array.shape[:2]
            resized = self.resize.get_transform(array).apply_image(array)
            tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
            inputs.append({"image": tensor, "height": H, "width": W})
        outputs = self.model(inputs) if inputs else []
        results = []
        for out in outputs:
            inst = out["instances"].to("cpu")
            keep = inst.pred_classes == self.class_index
            keep &= inst.scores >= self.score_thresh
            boxes, scores = inst.pred_boxes.tensor[keep].float(), inst.scores[keep].float()
            if self.nms_thresh < 1.0 and len(boxes):
                idx = batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), self.nms_thresh)
                boxes, scores = boxes[idx], scores[idx]
            order = scores.argsort(descending=True)[: self.max_people]
            results.append((boxes[order], scores[order]))
        return results


#: the test-time score thresholds of Detectron2's detectors (ROI heads: Faster / Mask / Keypoint R-CNN;
#: RetinaNet) and AdelaiDet's FCOS, where the detector's config has them
_SCORE_THRESH_KEYS = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST",
                      "MODEL.FCOS.INFERENCE_TH_TEST")


def lower_score_thresholds(det_cfg, score_thresh: float) -> None:
    """Lowers every test-time score threshold key of a detector config (`_SCORE_THRESH_KEYS`, those
    it has) to at most `score_thresh`, so that the detector returns every box the pose config may
    keep; `PersonDetector` then drops the boxes below `score_thresh` whatever the detector's kind."""
    for key in _SCORE_THRESH_KEYS:
        node, name = det_cfg, key.split(".")
        for part in name[:-1]:
            node = node.get(part)
            if node is None:
                break
        if node is not None and name[-1] in node:
            node[name[-1]] = min(float(node[name[-1]]), float(score_thresh))


def build_person_detector(cfg):
    """The detector of `cfg.MODEL.TOPDOWN.DETECTOR`, or None when CONFIG_FILE is empty."""
    d = cfg.MODEL.TOPDOWN.DETECTOR
    if not d.CONFIG_FILE:
        if d.WEIGHTS:
            raise ValueError(f"{_KEY}.WEIGHTS is set ({d.WEIGHTS!r}) but {_KEY}.CONFIG_FILE is empty")
        return None
    path = resolve_detector_config(d.CONFIG_FILE)
    det_cfg = get_d2pose_cfg()
    det_cfg.merge_from_file(path)
    det_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    lower_score_thresholds(det_cfg, d.SCORE_THRESH)
    det_cfg.TEST.DETECTIONS_PER_IMAGE = max(det_cfg.TEST.DETECTIONS_PER_IMAGE, d.MAX_PEOPLE)
    if det_cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator":
        raise ValueError(f"{_KEY}.CONFIG_FILE {d.CONFIG_FILE!r} is a top-down pose config, not a detector")
    if det_cfg.MODEL.KEYPOINT_ON:
        # a Keypoint R-CNN detects people too; its keypoints are not used
        det_cfg.MODEL.KEYPOINT_ON = False
    model = d2_build_model(det_cfg)
    if det_cfg.MODEL.META_ARCHITECTURE != "PoseRCNN":
        apply_memory_format(model, det_cfg.MODEL.CHANNELS_LAST)
    weights = resolve_detector_weights(d.WEIGHTS, d.CONFIG_FILE)
    if weights:
        DetectionCheckpointer(model).load(weights)
    else:
        logger.warning("%s.WEIGHTS is empty: the person detector %s has random weights", _KEY, d.CONFIG_FILE)
    return PersonDetector(model, input_format=det_cfg.INPUT.FORMAT, min_size=det_cfg.INPUT.MIN_SIZE_TEST,
                          max_size=det_cfg.INPUT.MAX_SIZE_TEST, class_index=d.CLASS_INDEX,
                          score_thresh=d.SCORE_THRESH, nms_thresh=d.NMS_THRESH, max_people=d.MAX_PEOPLE)
