"""timm backbones (HRNet, MobileNetV2, ResNet, ...) as Detectron2 backbones via `features_only`.

Feature maps are named by stride, "s4", "s8", "s16", "s32", so configs can pick levels without
knowing the architecture. Weights are never downloaded at run time: pretrained weights come from
`MODEL.WEIGHTS` or `MODEL.TIMM.CHECKPOINT` (a local file).
"""
import logging
from typing import Dict

import torch
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

__all__ = ["TimmBackbone", "build_timm_backbone"]


class TimmBackbone(Backbone):
    """A timm model created with features_only=True; outputs {"s<stride>": (N, C, H, W)}."""

    def __init__(self, name: str, out_indices=(1, 2, 3, 4), in_chans: int = 3, checkpoint: str = "", **kwargs):
        super().__init__()
        import timm

        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices),
                                      in_chans=in_chans, **kwargs)
        if checkpoint:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            if not set(state) & set(self.body.state_dict()):
                raise ValueError(f"MODEL.TIMM.CHECKPOINT {checkpoint}: no parameter matches timm model {name!r}")
            missing, unexpected = self.body.load_state_dict(state, strict=False)
            if missing or unexpected:
                logging.getLogger(__name__).warning(
                    "MODEL.TIMM.CHECKPOINT %s: %d parameters of %s not in the file, %d entries of the file unused",
                    checkpoint, len(missing), name, len(unexpected))
        info = self.body.feature_info
        self._names = [f"s{r}" for r in info.reduction()]
        self._out_features = list(self._names)
        self._out_feature_strides = dict(zip(self._names, info.reduction()))
        self._out_feature_channels = dict(zip(self._names, info.channels()))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(self._names, self.body(x)))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._names}


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    t = cfg.MODEL.TIMM
    kwargs = {} if t.FEATURE_LOCATION == "auto" else {"feature_location": t.FEATURE_LOCATION}
    return TimmBackbone(t.NAME, out_indices=tuple(t.OUT_INDICES), in_chans=input_shape.channels,
                        checkpoint=t.CHECKPOINT, **kwargs)
