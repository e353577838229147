"""TransPose's CNN stems (paper Sec. 3.2, Tables 8 and 9), registered in Detectron2's BACKBONE_REGISTRY.

* ResNet-S: Detectron2's ResNet-50 up to res3 (stride 8, 512 channels): the standard
  `build_resnet_backbone` with `MODEL.RESNETS.OUT_FEATURES ["res3"]` builds it (Detectron2 builds no
  stage after the last one asked for), and ImageNet weights load the usual way (MODEL.WEIGHTS
  `detectron2://ImageNetPretrained/torchvision/R-50.pkl`).
* ResNet-S*: the same stem and res2, but 10 Bottleneck-c128 blocks in res3 (`build_resnet_s_backbone`,
  MODEL.TRANSPOSE.RESNET_BLOCKS [3, 10]): built from Detectron2's own `BasicStem`, `BottleneckBlock`
  and `ResNet.make_stage`, so the module names are Detectron2's.
* HRNet-S-W32 / W48 (`build_hrnet_s_backbone`, MODEL.TIMM.NAME "hrnet_w32" / "hrnet_w48"): timm's
  HRNet truncated after stage 3, whose last module fuses into the highest-resolution branch only
  (the authors' `multi_scale_output=False`); output "s4" (stride 4, 32 / 48 channels). Module names
  are timm's (= the official HRNet's), so timm's ImageNet checkpoints load with MODEL.TIMM.CHECKPOINT
  (the dropped stage 4 and classifier are reported as unused).

The 1 x 1 convolution to the transformer width d (the last row of Tables 8 / 9) is the head's
`reduce` (d2pose_transpose.head.TransPoseHead).
"""
import logging
from typing import Dict, List

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from torch import nn

from d2pose.modeling.backbone.hrnet import load_hrnet_checkpoint

__all__ = ["build_resnet_s_backbone", "HRNetStem", "build_hrnet_s_backbone"]

logger = logging.getLogger(__name__)


@BACKBONE_REGISTRY.register()
def build_resnet_s_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """A Detectron2 ResNet with MODEL.TRANSPOSE.RESNET_BLOCKS blocks in res2, res3, ... (ResNet-S:
    [3, 4]; ResNet-S*: [3, 10]); widths, norm and stride placement from MODEL.RESNETS (DEPTH >= 50:
    bottleneck blocks, 18 / 34: basic blocks). Outputs every built stage ("res2", "res3", ...)."""
    r = cfg.MODEL.RESNETS
    blocks = [int(b) for b in cfg.MODEL.TRANSPOSE.RESNET_BLOCKS]
    if not blocks or any(b < 1 for b in blocks) or len(blocks) > 4:
        raise ValueError(f"MODEL.TRANSPOSE.RESNET_BLOCKS must list 1 to 4 positive block counts (res2, res3, ...), "
                         f"got {list(cfg.MODEL.TRANSPOSE.RESNET_BLOCKS)}")
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    bottleneck = r.DEPTH >= 50
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    width = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for i, n in enumerate(blocks):
        kwargs = dict(num_blocks=n, stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1),
                      in_channels=in_channels, out_channels=out_channels, norm=r.NORM)
        if bottleneck:
            kwargs.update(block_class=BottleneckBlock, bottleneck_channels=width, num_groups=r.NUM_GROUPS,
                          stride_in_1x1=r.STRIDE_IN_1X1)
        else:
            kwargs.update(block_class=BasicBlock)
        stages.append(ResNet.make_stage(**kwargs))
        in_channels, out_channels, width = out_channels, out_channels * 2, width * 2
    names = [f"res{i + 2}" for i in range(len(blocks))]
    return ResNet(stem, stages, out_features=names, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


class HRNetStem(Backbone):
    """timm's HRNet up to stage 3, output {"s4": highest-resolution branch (N, W, H/4, W/4)}."""

    def __init__(self, name: str = "hrnet_w32", in_chans: int = 3, checkpoint: str = ""):
        super().__init__()
        import timm

        body = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0)
        if not hasattr(body, "stage3_cfg"):
            raise ValueError(f"MODEL.TIMM.NAME {name!r} is not a timm HRNet (build_hrnet_s_backbone)")
        # truncate: nothing after stage 3; stage 3's last module fuses into branch 0 only
        for n in ("transition3", "stage4", "incre_modules", "downsamp_modules", "final_layer", "global_pool",
                  "head_drop", "classifier"):
            if hasattr(body, n):
                delattr(body, n)
        stage3_in = [int(c) for c in body.stage3_cfg["num_channels"]]  # BASIC blocks: in = out widths
        body.stage3, _ = body._make_stage(body.stage3_cfg, stage3_in, multi_scale_output=False)
        body.init_weights()
        self.body = body
        if checkpoint:
            self._load(checkpoint, name)
        self.width = stage3_in[0]
        self._out_features = ["s4"]
        self._out_feature_strides = {"s4": 4}
        self._out_feature_channels = {"s4": self.width}

    def _load(self, checkpoint: str, name: str) -> None:
        load_hrnet_checkpoint(self.body, checkpoint, name, f"HRNet-S {name!r}", "stage 4 / the classifier")

    @property
    def size_divisibility(self) -> int:
        """Stage 3's lowest branch is at stride 16 and is fused back by upsampling: crop sides must
        be multiples of 16 (TopDownPoseEstimator checks INPUT.TOPDOWN.INPUT_SIZE against this)."""
        return 16

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        b = self.body
        x = b.act1(b.bn1(b.conv1(x)))
        x = b.act2(b.bn2(b.conv2(x)))
        x = b.layer1(x)
        xl: List[torch.Tensor] = [t(x) for t in b.transition1]
        yl = b.stage2(xl)
        xl = [t(yl[-1]) if not isinstance(t, nn.Identity) else yl[i] for i, t in enumerate(b.transition2)]
        return {"s4": b.stage3(xl)[0]}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {"s4": ShapeSpec(channels=self.width, stride=4)}


@BACKBONE_REGISTRY.register()
def build_hrnet_s_backbone(cfg, input_shape: ShapeSpec) -> HRNetStem:
    """HRNet-S of MODEL.TIMM.NAME ("hrnet_w32" / "hrnet_w48"), optional MODEL.TIMM.CHECKPOINT."""
    return HRNetStem(cfg.MODEL.TIMM.NAME, in_chans=input_shape.channels, checkpoint=cfg.MODEL.TIMM.CHECKPOINT)
