"""The ROI regression base shared by the regression keypoint heads of Keypoint R-CNN (RLE's
`RLEKeypointHead`, Poseur's `PoseurKeypointHead`): Detectron2's conv stack on the pooled ROI
features, the box-relative coordinates of the "box_relative" codec (targets, decoding, scores, the
soft-argmax grid), the optional soft-argmax branches (mu by soft-argmax over the ROI grid, or over
a heatmap head's upsampled output), training-ROI
sampling, writing predictions into each image's `Instances`, and the losses of an empty batch.

Config (core keys, one per choice, shared by both heads): `MODEL.ROI_REGRESSION.COORDS` ("fc",
"integral" or "deconv"), `MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES` and `MODEL.ROI_REGRESSION.FRAME_MARGIN`
(a box is a reference frame, not a cage: labelled keypoints up to that many box sizes outside the
proposal box are supervised, so that a truncated box still gets its person's hidden keypoints,
as Poseur's Fig. 1 shows; soft-argmax coordinates cannot leave the box and supervise inside it
only); the conv stack is Detectron2's
`MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS`, started from a heatmap head's convs in the checkpoint with
`MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD`.

Shape shorthand: R ROIs, C channels, S x S pooled features, K keypoints.
"""
import logging
from typing import Iterable, List, Optional, Tuple

import torch
from detectron2.layers import Conv2d
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from ..codecs import BoxRelativeCoords
from .integral import soft_argmax

__all__ = ["HeatmapTrunkMixin", "ROI_COORDS", "check_soft_argmax_window", "ROIConvStack", "ROIDeconvCoords", "ROIIntegralCoords", "roi_conv_stack", "roi_integral_coords", "roi_keypoint_targets",
           "roi_frame_margin",
           "sample_train_rois", "write_roi_predictions", "zero_losses", "ROI_CODEC"]

#: values of MODEL.ROI_REGRESSION.COORDS: where an ROI head's box-relative mu comes from
ROI_COORDS = ("fc", "integral", "deconv")
#: the box-relative grid of ROIAlign bins (scores are the heads' own codec's)
ROI_CODEC = BoxRelativeCoords()


def _copy_if_fits(state_dict: dict, src: str, dst: str, module: nn.Module) -> bool:
    """In place: state_dict[dst + name] = state_dict[src + name] for each of `module`'s own
    parameters when the checkpoint has all of them in the module's shapes; returns whether it did."""
    own = dict(module.named_parameters(recurse=False))
    found = {n: state_dict.get(src + n) for n in own}
    if any(v is None or tuple(v.shape) != tuple(own[n].shape) for n, v in found.items()):
        return False
    state_dict.update({dst + n: v for n, v in found.items()})
    return True


class ROIConvStack(nn.Sequential):
    """Detectron2's keypoint-head conv stack (3x3 conv + ReLU per entry, MSRA fill) that can start
    from a heatmap Keypoint R-CNN's head.

    RLE's author trains the Mask R-CNN variant from a heatmap-trained Keypoint R-CNN with the head
    swapped. With `from_heatmap_head`, loading a checkpoint that has no weights for this stack but
    has Detectron2's `KRCNNConvDeconvUpsampleHead` convs beside it (`<head>.conv_fcn{i + 1}.*`, the
    same 3x3 convs) initialises conv i from conv_fcn{i + 1} while the shapes agree; the heatmap
    head's deconv and any further convs stay unused. Checkpoints of this stack itself load as usual.
    The head that owns the stack lists :class:`HeatmapTrunkMixin` (PyTorch hands a child only the
    entries under its own prefix, so the renaming runs in the head).
    """

    def __init__(self, in_channels: int, conv_dims: List[int], from_heatmap_head: bool = True):
        layers, c = [], in_channels
        for dim in conv_dims:
            conv = Conv2d(c, dim, 3, padding=1, activation=F.relu)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers.append(conv)
            c = dim
        super().__init__(*layers)
        self.out_channels = c
        self.from_heatmap_head = bool(from_heatmap_head)

    def take_heatmap_convs(self, state_dict: dict, prefix: str, head_prefix: str) -> List[str]:
        """In place: when `state_dict` has no entry under `prefix` (this stack's), copies the heatmap
        head's `head_prefix + conv_fcn{i + 1}.*` to `prefix + {i}.*` for the leading convs whose
        shapes agree. Returns the heatmap convs taken."""
        if not self.from_heatmap_head or any(k.startswith(prefix) for k in state_dict):
            return []
        taken = []
        for i, conv in enumerate(self):
            if not _copy_if_fits(state_dict, f"{head_prefix}conv_fcn{i + 1}.", f"{prefix}{i}.", conv):
                break
            taken.append(f"conv_fcn{i + 1}")
        if taken:
            logging.getLogger(__name__).info("%s: %d of %d convs start from the heatmap head's %s",
                                             prefix[:-1], len(taken), len(self), ", ".join(taken))
        return taken


class HeatmapTrunkMixin:
    """nn.Module mixin for a regression ROI keypoint head (list it before nn.Module): at load time
    each :class:`ROIConvStack` child takes a heatmap head's convs and each :class:`ROIDeconvCoords`
    child its `score_lowres` (see there)."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, child in self.named_children():
            if isinstance(child, ROIConvStack):
                child.take_heatmap_convs(state_dict, f"{prefix}{name}.", prefix)
            elif isinstance(child, ROIDeconvCoords):
                child.take_heatmap_predictor(state_dict, f"{prefix}{name}.", prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def roi_conv_stack(in_channels: int, conv_dims: List[int], from_heatmap_head: bool = True
                   ) -> Tuple[ROIConvStack, int]:
    """:class:`ROIConvStack` (MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS;
    MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD): returns the stack and its output channels."""
    stack = ROIConvStack(in_channels, conv_dims, from_heatmap_head)
    return stack, stack.out_channels


class ROIIntegralCoords(nn.Module):
    """Box-relative mu of an integral ROI head: K logit maps over the S x S ROI grid, soft-argmax.

    The 1x1 logit conv reads each cell's features conditioned on the whole ROI (a hidden layer
    `relu(x + context(mean_hw(x)))`): a shallow conv stack sees a few cells, and a cell showing a
    wrist cannot tell a left wrist from a right one without the head's orientation elsewhere in the
    box (measured without it, from scratch: predicted left-right shoulder distance 0.07 of the box
    width vs 0.31 in the labels, both sides collapsed onto their midpoint)."""

    def __init__(self, in_channels: int, num_keypoints: int, window: int = 0):
        super().__init__()
        self.window = check_soft_argmax_window(window)
        self.context = nn.Linear(in_channels, in_channels)
        self.conv = nn.Conv2d(in_channels, num_keypoints, 1)
        nn.init.kaiming_uniform_(self.context.weight, a=1)
        nn.init.zeros_(self.context.bias)
        nn.init.normal_(self.conv.weight, std=0.001)  # near-uniform maps: mu starts at the box centre
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, return_logits: bool = False):
        """x (R, C, S, S) conv features, pooled (R, C) their mean -> mu (R, K, 2) in float32, and
        with `return_logits` also the (R, K, S, S) logits it is the soft-argmax of."""
        h = F.relu(x + self.context(pooled.to(x.dtype))[:, :, None, None])
        logits = self.conv(h)
        mu = soft_argmax(logits, ROI_CODEC, window=self.window)
        return (mu, logits) if return_logits else mu


class ROIDeconvCoords(nn.Module):
    """Box-relative mu by soft-argmax over the output of Detectron2's heatmap keypoint head
    (`KRCNNConvDeconvUpsampleHead`): a 4x4 stride-2 transposed conv to K maps, then 2x bilinear
    upsampling (4S x 4S: 56 x 56 cells for 14 x 14 ROIs), on the ROI codec's cell centres, which are
    the bins of Detectron2's heatmap targets ((i + 0.5) / 4S of the box).

    The transposed conv is named `score_lowres`, like Detectron2's, and a heatmap Keypoint R-CNN's
    predictor loads into it (:class:`HeatmapTrunkMixin`): the head swap then changes only the loss
    and the decoding (soft-argmax and RLE's sigma instead of cross-entropy and argmax)."""

    def __init__(self, in_channels: int, num_keypoints: int, from_heatmap_head: bool = True, window: int = 0):
        super().__init__()
        self.window = check_soft_argmax_window(window)
        self.score_lowres = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2, padding=1)
        nn.init.normal_(self.score_lowres.weight, std=0.001)  # near-uniform maps: mu starts at the box centre
        nn.init.zeros_(self.score_lowres.bias)
        self.from_heatmap_head = bool(from_heatmap_head)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, return_logits: bool = False):
        """x (R, C, S, S) conv features (pooled unused) -> mu (R, K, 2) in float32, and with
        `return_logits` the (R, K, 4S, 4S) logits it is the soft-argmax of."""
        logits = F.interpolate(self.score_lowres(x), scale_factor=2, mode="bilinear", align_corners=False)
        mu = soft_argmax(logits, ROI_CODEC, window=self.window)
        return (mu, logits) if return_logits else mu

    def take_heatmap_predictor(self, state_dict: dict, prefix: str, head_prefix: str) -> bool:
        """In place: when `state_dict` has no entry under `prefix` (this branch's), copies the
        heatmap head's `head_prefix + score_lowres.*` there if the shapes agree."""
        if not self.from_heatmap_head or any(k.startswith(prefix) for k in state_dict):
            return False
        if not _copy_if_fits(state_dict, head_prefix + "score_lowres.", prefix + "score_lowres.", self.score_lowres):
            return False
        logging.getLogger(__name__).info("%s: starts from the heatmap head's score_lowres", prefix[:-1])
        return True


def check_soft_argmax_window(window: int) -> int:
    """MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW: an int >= 0 (cells; 0 = the whole map)."""
    if isinstance(window, bool) or int(window) != window or window < 0:
        raise ValueError(f"MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW must be an integer >= 0 (cells), got {window!r}")
    return int(window)


def roi_integral_coords(in_channels: int, num_keypoints: int, coords: str, from_heatmap_head: bool = True,
                        window: int = 0) -> Optional[nn.Module]:
    """The soft-argmax branch of an ROI head for MODEL.ROI_REGRESSION.COORDS: "integral"
    (:class:`ROIIntegralCoords`, S x S), "deconv" (:class:`ROIDeconvCoords`, 4S x 4S), None for "fc";
    `window` (MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW) > 0 makes its soft-argmax local to that many
    cells around each map's peak (:func:`d2pose.modeling.integral.soft_argmax_on_grid`)."""
    if coords not in ROI_COORDS:
        raise ValueError(f"MODEL.ROI_REGRESSION.COORDS must be one of {ROI_COORDS}, got {coords!r}")
    check_soft_argmax_window(window)
    if coords == "integral":
        return ROIIntegralCoords(in_channels, num_keypoints, window)
    if coords == "deconv":
        return ROIDeconvCoords(in_channels, num_keypoints, from_heatmap_head, window)
    return None


def roi_keypoint_targets(instances: List[Instances], margin: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Box-relative targets (R, K, 2) of training ROIs (`proposal_boxes`, `gt_keypoints`) and their
    weights (R, K): 1 for a labelled keypoint inside its proposal box grown by `margin` box sizes
    on each side (MODEL.ROI_REGRESSION.FRAME_MARGIN), else 0 (the codec's encode)."""
    boxes = torch.cat([i.proposal_boxes.tensor for i in instances])
    kps = torch.cat([i.gt_keypoints.tensor for i in instances])
    return BoxRelativeCoords(margin=margin).encode(kps[..., :2], kps[..., 2], boxes=boxes)


def roi_frame_margin(margin: float, coords: str) -> float:
    """The supervised margin around the box of a head whose mu comes from `coords`: the soft-argmax
    of "integral" and "deconv" cannot leave the ROI grid (0), "fc" regresses anywhere (`margin`)."""
    if margin < 0:
        raise ValueError(f"MODEL.ROI_REGRESSION.FRAME_MARGIN must be >= 0, got {margin}")
    return 0.0 if coords != "fc" else float(margin)


def sample_train_rois(instances: List[Instances], cap: int) -> Tuple[List[Instances], torch.Tensor]:
    """A random subset of at most `cap` ROIs per image (training-time subsampling of the keypoint
    head's ROIs; `cap` <= 0 keeps all). Returns the kept Instances and their rows (long) in the
    concatenation of `instances`, e.g. to select pooled features that follow the instances."""
    rows, kept, start = [], [], 0
    for inst in instances:
        n = len(inst)
        device = inst.proposal_boxes.device if inst.has("proposal_boxes") else None
        idx = torch.randperm(n, device=device)[:cap] if 0 < cap < n else torch.arange(n, device=device)
        rows.append(idx + start)
        kept.append(inst[idx])
        start += n
    return kept, (torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long))


def write_roi_predictions(instances: List[Instances], mu: torch.Tensor, sigma: torch.Tensor,
                          codec: BoxRelativeCoords) -> List[Instances]:
    """Splits box-relative mu / sigma (R, K, 2) of the concatenated ROIs over the images' Instances:
    `pred_keypoints` (n, K, 3: image x, y, score from sigma) and `pred_keypoint_sigmas` (n, K, 2)."""
    start = 0
    K = mu.shape[1] if mu.dim() == 3 else 0
    for inst in instances:
        n = len(inst)
        boxes = inst.pred_boxes.tensor
        if n == 0:
            inst.pred_keypoints = boxes.new_zeros(0, K, 3)
            inst.pred_keypoint_sigmas = boxes.new_zeros(0, K, 2)
            continue
        xy = codec.decode(mu[start:start + n].to(boxes.dtype), boxes=boxes)
        scores = codec.score(sigma[start:start + n]).to(xy.dtype)
        inst.pred_keypoints = torch.cat([xy, scores[..., None]], dim=-1)
        inst.pred_keypoint_sigmas = sigma[start:start + n]
        start += n
    return instances


def zero_losses(module: nn.Module, names: Iterable[str]) -> dict:
    """Losses of a batch without foreground ROIs: zeros under the usual names, connected to every
    parameter (so that distributed training sees the same graph on every process)."""
    zero = sum(p.sum() * 0 for p in module.parameters())
    return {name: zero for name in names}
