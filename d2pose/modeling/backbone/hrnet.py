"""HRNet with its four branches fused at stride 4, the backbone of bottom-up methods (DEKR, LOGO-CAP).

timm's HRNet (`hrnet_w32`, `hrnet_w48`, ...) through stage 4, whose last module keeps all four
branches; the stride 8 / 16 / 32 branches are upsampled bilinearly (align_corners=False) to the
stride 4 one and concatenated: W32 -> 32 + 64 + 128 + 256 = 480 channels, W48 -> 720. Module names
are timm's, which are the official HRNet's, so ImageNet checkpoints (MODEL.TIMM.CHECKPOINT) and the
authors' pose checkpoints load without renaming; the classification head is dropped.
"""
import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

__all__ = ["HRNetConcat", "build_hrnet_concat_backbone", "load_hrnet_checkpoint"]

logger = logging.getLogger(__name__)

_HEAD_MODULES = ("incre_modules", "downsamp_modules", "final_layer", "global_pool", "head_drop", "classifier")


def load_hrnet_checkpoint(body: nn.Module, checkpoint: str, name: str, what: str, unused: str) -> None:
    """Loads the entries of a timm HRNet checkpoint that `body` (a possibly truncated timm HRNet) has;
    every parameter of `body` must be there (ValueError naming the file and one missing key), the
    file's other entries (`unused`: the parts `body` dropped) are logged."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    own = body.state_dict()
    shared = {k: v for k, v in state.items() if k in own}
    if not shared:
        raise ValueError(f"MODEL.TIMM.CHECKPOINT {checkpoint}: no parameter matches timm model {name!r}")
    missing, _ = body.load_state_dict(shared, strict=False)
    if missing:
        raise ValueError(f"MODEL.TIMM.CHECKPOINT {checkpoint}: lacks {len(missing)} parameters of {what}, "
                         f"e.g. {missing[0]!r}")
    logger.info("MODEL.TIMM.CHECKPOINT %s: %d tensors of %s unused", checkpoint, len(set(state) - set(shared)), unused)


class HRNetConcat(Backbone):
    """timm HRNet, output {"s4": (N, sum of branch widths, H/4, W/4)}."""

    def __init__(self, name: str = "hrnet_w32", in_chans: int = 3, checkpoint: str = ""):
        super().__init__()
        import timm

        body = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0)
        if not hasattr(body, "stage4_cfg"):
            raise ValueError(f"MODEL.TIMM.NAME {name!r} is not a timm HRNet (build_hrnet_concat_backbone)")
        for n in _HEAD_MODULES:
            if hasattr(body, n):
                delattr(body, n)
        self.body = body
        if checkpoint:
            self._load(checkpoint, name)
        self.branch_channels = [int(c) for c in body.stage4_cfg["num_channels"]]
        self.channels = sum(self.branch_channels)
        self._out_features = ["s4"]
        self._out_feature_strides = {"s4": 4}
        self._out_feature_channels = {"s4": self.channels}

    def _load(self, checkpoint: str, name: str) -> None:
        load_hrnet_checkpoint(self.body, checkpoint, name, name, "the classification head")

    @property
    def size_divisibility(self) -> int:
        """The stride 32 branch is fused back by upsampling to exact sizes: inputs are padded to 32."""
        return 32

    def branches(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four branch outputs of stage 4 (strides 4, 8, 16, 32)."""
        b = self.body
        x = b.act1(b.bn1(b.conv1(x)))
        x = b.act2(b.bn2(b.conv2(x)))
        x = b.layer1(x)
        xl = [t(x) for t in b.transition1]
        yl = b.stage2(xl)
        xl = [t(yl[-1]) if not isinstance(t, nn.Identity) else yl[i] for i, t in enumerate(b.transition2)]
        yl = b.stage3(xl)
        xl = [t(yl[-1]) if not isinstance(t, nn.Identity) else yl[i] for i, t in enumerate(b.transition3)]
        return b.stage4(xl)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        ys = self.branches(x)
        size = ys[0].shape[-2:]
        up = [ys[0]] + [F.interpolate(y, size=size, mode="bilinear", align_corners=False) for y in ys[1:]]
        return {"s4": torch.cat(up, 1)}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {"s4": ShapeSpec(channels=self.channels, stride=4)}


@BACKBONE_REGISTRY.register()
def build_hrnet_concat_backbone(cfg, input_shape: ShapeSpec) -> HRNetConcat:
    """HRNet of MODEL.TIMM.NAME ("hrnet_w32" / "hrnet_w48"), branches fused at stride 4, optional
    MODEL.TIMM.CHECKPOINT."""
    return HRNetConcat(cfg.MODEL.TIMM.NAME, in_chans=input_shape.channels, checkpoint=cfg.MODEL.TIMM.CHECKPOINT)
