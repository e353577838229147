"""The top-down meta-architecture shared by every crop-based method (RLE, Poseur, TransPose).

backbone -> head (TOPDOWN_HEAD_REGISTRY) -> codec: training on person crops made by
`TopDownDatasetMapper`; inference on the person boxes of each image, with flip test and OKS-NMS,
returning Detectron2 `Instances` (`pred_keypoints` (R, K, 3) in image coordinates, `scores`,
`pred_boxes`, `detector_scores` (the person boxes' scores, where a detector gave them: the person
detector, given "person_scores", a mapper's detection boxes), head extras such as
`pred_keypoint_sigmas`) per image.

`scores` are in [0, 1]: the box score (1 for ground-truth boxes and the whole image) and the keypoint
scores combined by TEST.KEYPOINT_RESCORE (`d2pose.evaluation.rescore_instances`): "box_x_mean" (the
TransPose / HRNet authors' box score x mean of the keypoint scores above 0.2) or "box_plus_mean_max"
(the RLE / Poseur authors' box score + mean + max keypoint score, divided by 3), clipped to [0, 1];
monotone maps of the authors' scores, so their ranking and the COCO AP are theirs.

OKS-NMS (TEST.OKS_NMS_THRESH, 0 = off) runs on the poses of each image whose people are detections
(the person detector's, given "person_boxes" with "person_scores", TEST.PERSON_DETECTIONS); on poses
of ground-truth or given boxes without scores (one box per person) only with TEST.OKS_NMS_GT_BOXES
(the COCO configs' authors' protocol).

Inputs at inference, in Detectron2's list-of-dicts form:
  * whole images {"image": (3, H, W) in INPUT.FORMAT, 0-255, optional "height", "width",
    "person_boxes" (R, 4 XYXY), "person_scores" (R,)}: what `DefaultPredictor` and the demo give.
    The people are the given "person_boxes" when present, else the person detector's
    (MODEL.TOPDOWN.DETECTOR), else the whole image is one person. "height" / "width" are the
    output frame, as in Detectron2: an image that was resized before the model (DefaultPredictor's
    INPUT.MIN_SIZE_TEST; the top-down configs set 0, no resize) is cropped as given and its results
    are scaled back to (height, width); given "person_boxes" are in that output frame too.
  * crops made by `TopDownDatasetMapper` {"image": (R, 3, h, w), "crop_matrices_inv", "boxes",
    "box_scores", "height", "width"} (dataset evaluation with ground-truth or file boxes).
The crops of every image of the call go through the network as one batch.

Shape shorthand: N images, R crops, K keypoints, H x W crop.
"""
from collections import OrderedDict
from typing import Dict, List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, Instances
from torch import nn

from ...engine.precision import autocast_context, inference_precision
from ..build import apply_memory_format, check_pipeline
from ...data.transforms.affine import apply_affine, crop_boxes
from ...evaluation.oks_nms import oks_nms, rescore_instances
from ..heads.build import build_topdown_head
from ..person_detector import build_person_detector

__all__ = ["TopDownPoseEstimator"]


def _numpy(values) -> np.ndarray:
    """float64 numpy array of a list, array or tensor on any device."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


@META_ARCH_REGISTRY.register()
class TopDownPoseEstimator(nn.Module):
    """Backbone + top-down head; see the module docstring."""

    @configurable
    def __init__(self, *, backbone: nn.Module, head: nn.Module, pixel_mean, pixel_std, input_size,
                 flip_indices=None, flip_test: bool = True, padding: float = 1.25, rescore: str = "box_x_mean",
                 oks_nms_thresh: float = 0.9, oks_nms_gt_boxes: bool = False, sigmas=None,
                 input_format: str = "BGR",
                 inference_dtype=None, channels_last: bool = False, detector: nn.Module = None):
        """
        Args:
            backbone, head: modules; the head follows TOPDOWN_HEAD_REGISTRY's contract.
            pixel_mean, pixel_std: per-channel normalisation (buffers follow .to()).
            input_size: crop (W, H).
            flip_indices: left/right permutation for the flip test (None disables it).
            flip_test: average the crop and its mirror at inference.
            padding: box enlargement when the model crops inputs itself.
            rescore: instance score in [0, 1] from box and keypoint scores
                (d2pose.evaluation.rescore_instances).
            oks_nms_thresh: OKS-NMS threshold per image (0 disables it).
            oks_nms_gt_boxes: OKS-NMS also on the poses of boxes that are not detections (ground
                truth, given boxes without scores); False: only on detections' poses.
            sigmas: OKS sigmas for OKS-NMS.
            input_format: channel order of the images.
            inference_dtype: autocast type of the network at inference (None: float32); from
                TEST.AUTOCAST_DTYPE through d2pose.engine.precision. Decoding stays in float32.
            channels_last: 4-D weights in channels-last layout (MODEL.CHANNELS_LAST), applied here so
                that every builder (Detectron2's DefaultPredictor too) gets it.
            detector: a `PersonDetector` for whole images without boxes (None: the whole image is
                one person). Frozen; not part of the state_dict.
        """
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.input_size = tuple(int(v) for v in input_size)
        self.flip_indices = list(flip_indices) if flip_indices is not None else None
        self.flip_test = flip_test and flip_indices is not None
        self.padding = padding
        self.rescore = rescore
        self.oks_nms_thresh = oks_nms_thresh
        self.oks_nms_gt_boxes = bool(oks_nms_gt_boxes)
        self.sigmas = np.asarray(sigmas) if sigmas is not None else None
        self.input_format = input_format
        self.inference_dtype = inference_dtype
        apply_memory_format(self, channels_last)
        self.person_detector = detector  # assigned after apply_memory_format: the detector keeps its own layout

    # the person detector has its own weights (MODEL.TOPDOWN.DETECTOR.WEIGHTS): pose checkpoints
    # neither hold nor need them
    _DETECTOR_PREFIX = "person_detector."

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "") + self._DETECTOR_PREFIX
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        metadata = getattr(state_dict, "_metadata", None)  # module versions (checkpoint upgrades read them)
        state_dict = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith(self._DETECTOR_PREFIX))
        if metadata is not None:
            state_dict._metadata = metadata
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(self._DETECTOR_PREFIX)]
        result.missing_keys[:] = missing
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: missing keys {missing}, "
                               f"unexpected keys {result.unexpected_keys}")
        return result

    @classmethod
    def from_config(cls, cfg):
        check_pipeline(cfg, "TopDownPoseEstimator", "topdown", "trains on person crops")
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        div = int(getattr(backbone, "size_divisibility", 0) or 0)
        W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
        if div > 1 and (W % div or H % div):
            # e.g. an FPN's top-down sum fails on odd feature sizes with an opaque shape error
            raise ValueError(f"INPUT.TOPDOWN.INPUT_SIZE {(W, H)} must be divisible by {div} for backbone "
                             f"{cfg.MODEL.BACKBONE.NAME!r} (its size_divisibility)")
        head = build_topdown_head(cfg, backbone.output_shape())
        names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
        meta = MetadataCatalog.get(names[0]) if names else None
        return dict(
            backbone=backbone, head=head, pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
            input_size=cfg.INPUT.TOPDOWN.INPUT_SIZE,
            flip_indices=meta.get("keypoint_flip_indices") if meta is not None else None,
            flip_test=cfg.TEST.KEYPOINT_FLIP, padding=cfg.INPUT.TOPDOWN.PADDING, rescore=cfg.TEST.KEYPOINT_RESCORE,
            oks_nms_thresh=cfg.TEST.OKS_NMS_THRESH, oks_nms_gt_boxes=cfg.TEST.OKS_NMS_GT_BOXES,
            sigmas=meta.get("keypoint_oks_sigmas") if meta is not None else None, input_format=cfg.INPUT.FORMAT,
            inference_dtype=inference_precision(cfg).dtype, channels_last=cfg.MODEL.CHANNELS_LAST,
            detector=build_person_detector(cfg),
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _memory_format(self) -> torch.memory_format:
        """The layout of the backbone's convolution weights (MODEL.CHANNELS_LAST or not), read from
        the first k x k (k > 1) weight: a 1 x 1 one is contiguous in both layouts."""
        for p in self.backbone.parameters():
            if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
                return torch.contiguous_format if p.is_contiguous() else torch.channels_last
        return torch.contiguous_format

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        # crops arrive in either layout (a (R, H, W, 3) array permuted is channels-last): give the
        # backbone the layout of its weights, or every convolution reorders its input (measured
        # 220 vs 162 ms for a flip-tested Poseur R-50 crop on a contiguous model)
        x = (images.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=self._memory_format())

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self._normalize(torch.stack([x["image"] for x in batched_inputs]))
        outputs = self.head(self.backbone(images))
        return self.head.losses(outputs, batched_inputs)

    def _check_image(self, x: Dict, i: int) -> torch.Tensor:
        """The input's "image": (3, H, W) whole image or (R, 3, h, w) crops; a clear error otherwise."""
        image = x.get("image") if isinstance(x, dict) else None
        C = len(self.pixel_mean)
        expected = (f"TopDownPoseEstimator input {i}: 'image' must be a (3, H, W) tensor in INPUT.FORMAT "
                    f"{self.input_format!r}, values 0-255 (Detectron2's DefaultPredictor takes an (H, W, 3) array; "
                    f"d2pose.data.prepare_image converts grayscale, alpha and other arrays)")
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"{expected}; got {type(image).__name__}")
        if image.dim() not in (3, 4) or image.shape[-3] != C:
            raise ValueError(f"{expected}; got shape {tuple(image.shape)}")
        if image.dim() == 3 and (image.shape[1] == 0 or image.shape[2] == 0):
            raise ValueError(f"TopDownPoseEstimator input {i}: the image is empty ({image.shape[1]} x {image.shape[2]})")
        return image

    def _crop_inputs(self, x: Dict, boxes, scores, detected: bool) -> Dict:
        """Crops a whole image (3, H, W) around `boxes` (R, 4 XYXY in the image's frame); the inverse
        crop matrices map to the output frame (height, width). `detected`: `scores` are a detector's."""
        image = x["image"].permute(1, 2, 0).cpu().numpy()
        H, W = image.shape[:2]
        out_h, out_w = int(x.get("height", H)), int(x.get("width", W))
        sx, sy = W / out_w, H / out_h  # output frame -> image frame
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        crops, inv = crop_boxes(image, boxes, self.input_size, self.padding)
        inv = inv / np.array([[sx], [sy]])  # crop -> image -> output frame
        out_boxes = boxes / np.array([sx, sy, sx, sy])
        return dict(x, image=torch.as_tensor(crops).permute(0, 3, 1, 2), crop_matrices_inv=torch.as_tensor(inv),
                    boxes=torch.as_tensor(out_boxes), box_scores=torch.as_tensor(np.asarray(scores, np.float64)),
                    box_scores_detected=detected, height=out_h, width=out_w)

    def _person_boxes(self, inputs: List[Dict]) -> List:
        """(boxes (R, 4) in each whole image's own frame, scores (R,), whether the scores are a
        detector's) per whole-image input: given "person_boxes" (output frame, scaled here; their
        "person_scores" a detector's), else the detector's, else the whole image."""
        found = [None] * len(inputs)
        to_detect = []
        for i, x in enumerate(inputs):
            H, W = x["image"].shape[-2:]
            if "person_boxes" in x:
                b = _numpy(x["person_boxes"]).reshape(-1, 4)
                s = _numpy(x.get("person_scores", np.ones(len(b)))).reshape(-1)
                if len(s) != len(b):
                    raise ValueError(f"TopDownPoseEstimator input {i}: {len(b)} person_boxes but {len(s)} person_scores")
                sx, sy = W / int(x.get("width", W)), H / int(x.get("height", H))
                found[i] = (b * np.array([sx, sy, sx, sy]), s, "person_scores" in x)
            elif self.person_detector is not None:
                to_detect.append(i)
            else:
                found[i] = (np.array([[0.0, 0.0, W, H]]), np.ones(1), False)
        if to_detect:
            detected = self.person_detector([inputs[i]["image"] for i in to_detect], self.input_format)
            for i, (b, s) in zip(to_detect, detected):
                found[i] = (b.double().numpy(), s.double().numpy(), True)
        return found

    def _predict_crops(self, crops: torch.Tensor):
        images = self._normalize(crops)
        with autocast_context(self.inference_dtype, images.device.type):
            outputs = self.head(self.backbone(images))
            if self.flip_test:
                flipped = self.head(self.backbone(images.flip(-1)))
        if self.flip_test:
            outputs = self.head.flip_fuse(outputs, flipped, self.flip_indices)
        return self.head.predict(outputs)

    def inference(self, batched_inputs: List[Dict]) -> List[Dict]:
        images = [self._check_image(x, i) for i, x in enumerate(batched_inputs)]
        whole = [i for i, image in enumerate(images) if image.dim() == 3]
        inputs = list(batched_inputs)
        for i, (boxes, scores, detected) in zip(whole, self._person_boxes([batched_inputs[i] for i in whole])):
            inputs[i] = self._crop_inputs(batched_inputs[i], boxes, scores, detected)
        counts = [len(x["image"]) for x in inputs]
        crops = torch.cat([x["image"] for x in inputs]) if inputs else torch.zeros(0)
        if crops.shape[0] > 0:
            coords, scores, extras = self._predict_crops(crops)
        else:
            coords = scores = None
            extras = {}
        results, start = [], 0
        for x, n in zip(inputs, counts):
            sl = slice(start, start + n)
            start += n
            results.append({"instances": self._to_instances(x, coords, scores, extras, sl, n)})
        return results

    def _to_instances(self, x: Dict, coords, scores, extras, sl: slice, n: int) -> Instances:
        """Crop predictions of one image -> Instances in image coordinates (after OKS-NMS)."""
        H, W = int(x["height"]), int(x["width"])
        inst = Instances((H, W))
        K = self.head.num_keypoints
        if n == 0:
            inst.pred_keypoints = torch.zeros(0, K, 3)
            inst.scores = torch.zeros(0)
            inst.pred_boxes = Boxes(torch.zeros(0, 4))
            if x.get("box_scores_detected", False):
                inst.detector_scores = torch.zeros(0)
            return inst
        inv = x["crop_matrices_inv"].double().cpu().numpy()
        c = coords[sl].double().cpu().numpy()
        img_xy = np.stack([apply_affine(c[i], inv[i]) for i in range(n)])  # (R, K, 2) crop -> image
        kp_scores = scores[sl].float().cpu()
        kps = torch.cat([torch.as_tensor(img_xy, dtype=torch.float32), kp_scores[..., None]], -1)
        box_scores = x["box_scores"].float().cpu()
        inst_scores = rescore_instances(box_scores, kp_scores, method=self.rescore)
        inst.pred_keypoints = kps
        inst.scores = inst_scores.float()
        inst.pred_boxes = Boxes(x["boxes"].float().cpu())
        if x.get("box_scores_detected", False):
            inst.detector_scores = box_scores
        for name, value in extras.items():
            inst.set(name, value[sl].float().cpu())
        if self._runs_oks_nms(x, n):
            b = x["boxes"].double().cpu().numpy()
            areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            keep = oks_nms(kps.numpy(), inst.scores.numpy(), areas, self.sigmas, thresh=self.oks_nms_thresh)
            inst = inst[torch.as_tensor(np.asarray(keep), dtype=torch.long)]
        return inst

    def _runs_oks_nms(self, x: Dict, n: int) -> bool:
        """Whether OKS-NMS runs on the `n` poses of input `x`: on, with sigmas and > 1 pose, for
        detected people, and for ground-truth / given boxes with `oks_nms_gt_boxes`."""
        if self.oks_nms_thresh <= 0 or self.sigmas is None or n < 2:
            return False
        return bool(x.get("box_scores_detected", False)) or self.oks_nms_gt_boxes
