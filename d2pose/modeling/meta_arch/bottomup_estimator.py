"""The bottom-up meta-architecture skeleton: whole images in, every person out, no person detector.

`BottomUpPoseEstimator` holds what any bottom-up method needs around its network: pixel
normalisation, padding to the backbone's divisibility, the flip-test batch, the map from the network
input back to the output frame, pose NMS, the people limit and Detectron2 `Instances`
(`pred_keypoints` (P, K, 3), `scores` in [0, 1], `pred_boxes` = the keypoints' box). A method
subclasses it and implements `losses(images, batched_inputs)` (training) and `predict(images)` (one
image and, with the flip test, its mirror -> poses (P, K, 3) in continuous input coordinates and
scores (P,)).
`Instances.scores` are the method's pose scores clipped to [0, 1] after pose NMS and the people
limit (which rank by the unclipped scores): a monotone map, so the method's ranking and its COCO AP
are kept, and one threshold reads as for the top-down models.

Inputs, in Detectron2's list-of-dicts form:
  * from `BottomUpDatasetMapper` at test time: {"image": (3, H', W') resized (short side, aspect
    kept, padded), "resize_matrix" (2, 3) image -> input, "height", "width"};
  * from `DefaultPredictor` / the demo: {"image": (3, H', W') in INPUT.FORMAT, "height", "width"}; an
    image resized before the model (DefaultPredictor's INPUT.MIN_SIZE_TEST) is mapped back to
    (height, width) by the size ratio.
  * training, from `BottomUpDatasetMapper`: square augmented images with their dense targets.
Each test image goes through the network on its own (their sizes differ), as in the authors' code.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from torch import nn

from ...engine.precision import autocast_context
from ..pose_nms import pose_nms

__all__ = ["BottomUpPoseEstimator"]


class BottomUpPoseEstimator(nn.Module):
    """Base class of bottom-up meta-architectures; see the module docstring."""

    def __init__(self, *, backbone: nn.Module, pixel_mean, pixel_std, flip_indices: Optional[Sequence[int]],
                 sigmas: Sequence[float], flip_test: bool = True, input_format: str = "BGR", size_divisibility: int = 64,
                 max_people: int = 30, pose_nms_thresh: float = 0.05, pose_nms_joints: int = 8,
                 inference_dtype=None):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.flip_indices = list(flip_indices) if flip_indices is not None else None
        self.flip_test = bool(flip_test) and self.flip_indices is not None
        self.sigmas = [float(s) for s in sigmas]
        self.num_keypoints = len(self.sigmas)
        if self.flip_indices is not None and len(self.flip_indices) != self.num_keypoints:
            raise ValueError(f"{len(self.flip_indices)} flip indices for {self.num_keypoints} keypoint sigmas "
                             f"(dataset metadata keypoint_flip_indices / keypoint_oks_sigmas)")
        self.input_format = input_format
        self.size_divisibility = max(int(size_divisibility), 1)
        self.max_people = int(max_people)
        self.pose_nms_thresh = float(pose_nms_thresh)
        self.pose_nms_joints = int(pose_nms_joints)
        self.inference_dtype = inference_dtype

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std

    # -- to implement ------------------------------------------------------------------------
    def losses(self, images: torch.Tensor, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """images (1 or 2 (image, mirror), 3, H, W) normalised -> {"poses": (P, K, 3) continuous input
        coordinates + keypoint scores, "scores": (P,)} before pose NMS."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.normalize(torch.stack([x["image"] for x in batched_inputs]))
        return self.losses(images, batched_inputs)

    def _check_image(self, x: Dict, i: int) -> torch.Tensor:
        image = x.get("image") if isinstance(x, dict) else None
        expected = (f"{type(self).__name__} input {i}: 'image' must be a (3, H, W) tensor in INPUT.FORMAT "
                    f"{self.input_format!r}, values 0-255")
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"{expected}; got {type(image).__name__}")
        if image.dim() != 3 or image.shape[0] != len(self.pixel_mean):
            raise ValueError(f"{expected}; got shape {tuple(image.shape)}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"{type(self).__name__} input {i}: the image is empty ({image.shape[1]} x {image.shape[2]})")
        return image

    def pad(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W) -> zero-padded at the bottom / right to multiples of size_divisibility."""
        d = self.size_divisibility
        H, W = image.shape[-2:]
        ph, pw = (-H) % d, (-W) % d
        return F.pad(image, (0, pw, 0, ph)) if ph or pw else image

    def _to_output_matrix(self, x: Dict, image: torch.Tensor) -> np.ndarray:
        """2 x 3 matrix from network-input continuous coordinates to the output frame."""
        H, W = image.shape[-2:]
        if "resize_matrix" in x:
            m = np.asarray(x["resize_matrix"], dtype=np.float64).reshape(2, 3)
            full = np.vstack([m, [0.0, 0.0, 1.0]])
            return np.linalg.inv(full)[:2]
        out_h, out_w = int(x.get("height", H)), int(x.get("width", W))
        return np.array([[out_w / W, 0.0, 0.0], [0.0, out_h / H, 0.0]])

    def inference(self, batched_inputs: List[Dict]) -> List[Dict]:
        results = []
        for i, x in enumerate(batched_inputs):
            image = self._check_image(x, i)
            net_in = self.normalize(self.pad(image))[None]
            if self.flip_test:
                net_in = torch.cat([net_in, net_in.flip(-1)])
            with autocast_context(self.inference_dtype, net_in.device.type):
                out = self.predict(net_in)
            results.append({"instances": self._to_instances(x, image, out)})
        return results

    def select(self, poses: torch.Tensor, scores: torch.Tensor):
        """Pose NMS, then the `max_people` best: (P, K, 3), (P,) -> kept rows (in NMS order)."""
        keep = pose_nms(poses[..., :2], scores, self.pose_nms_thresh, self.pose_nms_joints)
        idx = torch.as_tensor(keep, dtype=torch.long, device=poses.device)
        poses, scores = poses[idx], scores[idx]
        if len(scores) > self.max_people:
            top = scores.topk(self.max_people).indices
            poses, scores = poses[top], scores[top]
        return poses, scores

    def _to_instances(self, x: Dict, image: torch.Tensor, out: Dict[str, torch.Tensor]) -> Instances:
        H, W = image.shape[-2:]
        out_h, out_w = int(x.get("height", H)), int(x.get("width", W))
        inst = Instances((out_h, out_w))
        poses, scores = out["poses"].float().cpu(), out["scores"].float().cpu()
        poses, scores = self.select(poses, scores)
        m = torch.as_tensor(self._to_output_matrix(x, image), dtype=torch.float64)
        xy = poses[..., :2].double() @ m[:, :2].t() + m[:, 2]
        kps = torch.cat([xy.float(), poses[..., 2:]], -1)
        inst.pred_keypoints = kps
        inst.scores = scores.clamp(0.0, 1.0)
        if len(kps):
            boxes = torch.cat([kps[..., :2].amin(1), kps[..., :2].amax(1)], -1)
        else:
            boxes = torch.zeros(0, 4)
        inst.pred_boxes = Boxes(boxes)
        inst.pred_classes = torch.zeros(len(kps), dtype=torch.long)  # person
        return inst
