"""timm backbones as Detectron2 backbones: names by stride, channels, local checkpoints."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from d2pose.config import get_d2pose_cfg
from d2pose.modeling.backbone.timm_backbone import TimmBackbone


def _cfg(name, **timm_keys):
    cfg = get_d2pose_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
    cfg.MODEL.TIMM.NAME = name
    for k, v in timm_keys.items():
        setattr(cfg.MODEL.TIMM, k, v)
    return cfg


@pytest.mark.parametrize("name,location,channels", [
    ("hrnet_w18_small", "", [16, 32, 64, 128]),  # raw HRNet branches (Poseur's HRNet levels)
    ("mobilenetv2_100", "auto", [24, 32, 96, 320]),
])
def test_levels_named_by_stride(name, location, channels):
    torch.manual_seed(0)
    bb = build_backbone(_cfg(name, FEATURE_LOCATION=location), ShapeSpec(channels=3)).eval()
    shapes = bb.output_shape()
    assert list(shapes) == ["s4", "s8", "s16", "s32"]
    assert [s.channels for s in shapes.values()] == channels
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 96))
    for n, s in shapes.items():
        assert out[n].shape == (1, s.channels, 64 // s.stride, 96 // s.stride)


def test_local_checkpoint_loads_and_mismatch_is_an_error(tmp_path):
    torch.manual_seed(0)
    src = TimmBackbone("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(src.body.state_dict(), path)
    dst = build_backbone(_cfg("resnet18", CHECKPOINT=str(path)), ShapeSpec(channels=3))
    for k, v in src.body.state_dict().items():
        assert torch.equal(dst.body.state_dict()[k], v), k
    torch.save({"nothing.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="MODEL.TIMM.CHECKPOINT"):
        build_backbone(_cfg("resnet18", CHECKPOINT=str(path)), ShapeSpec(channels=3))
