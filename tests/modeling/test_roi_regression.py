"""The regression ROI heads' conv stack starting from a heatmap Keypoint R-CNN's head (the head swap
of RLE's author's Mask R-CNN recipe)."""
import logging

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg
from d2pose.modeling.roi_regression import HeatmapTrunkMixin, ROIConvStack


def _cfg(path, **opts):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


def _heatmap_state(conv_shapes, prefix="roi_heads.keypoint_head."):
    torch.manual_seed(1)
    state = {}
    for i, (cout, cin) in enumerate(conv_shapes):
        state[f"{prefix}conv_fcn{i + 1}.weight"] = torch.randn(cout, cin, 3, 3)
        state[f"{prefix}conv_fcn{i + 1}.bias"] = torch.randn(cout)
    return state


class _Head(HeatmapTrunkMixin, torch.nn.Module):
    def __init__(self, dims, **kw):
        super().__init__()
        self.convs = ROIConvStack(8, dims, **kw)


class _Model(torch.nn.Module):
    def __init__(self, dims, **kw):
        super().__init__()
        self.roi_heads = torch.nn.Module()
        self.roi_heads.keypoint_head = _Head(dims, **kw)


def test_stack_takes_the_heatmap_convs_that_fit_and_stops_at_the_first_that_does_not():
    model = _Model([8, 8, 4])
    before = model.roi_heads.keypoint_head.convs[2].weight.detach().clone()
    state = _heatmap_state([(8, 8), (8, 8), (8, 8), (8, 8)])  # conv_fcn3 has 8 outputs, the stack's 3rd conv 4
    model.load_state_dict(state, strict=False)
    convs = model.roi_heads.keypoint_head.convs
    for i in range(2):
        torch.testing.assert_close(convs[i].weight, state[f"roi_heads.keypoint_head.conv_fcn{i + 1}.weight"])
        torch.testing.assert_close(convs[i].bias, state[f"roi_heads.keypoint_head.conv_fcn{i + 1}.bias"])
    torch.testing.assert_close(convs[2].weight, before)


def test_stack_own_weights_win_and_the_switch_turns_it_off():
    model = _Model([8, 8])
    own = {f"roi_heads.keypoint_head.convs.{i}.{n}": torch.full_like(p, 0.5)
           for i, c in enumerate(model.roi_heads.keypoint_head.convs) for n, p in c.named_parameters()}
    state = {**_heatmap_state([(8, 8), (8, 8)]), **own}
    model.load_state_dict(state, strict=False)
    assert all(bool((p == 0.5).all()) for p in model.roi_heads.keypoint_head.convs.parameters())

    off = _Model([8, 8], from_heatmap_head=False)
    init = [p.detach().clone() for p in off.parameters()]
    off.load_state_dict(_heatmap_state([(8, 8), (8, 8)]), strict=False)
    for a, b in zip(init, off.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("config", ["projects/RLE/configs/synthetic_rle_rcnn.yaml", "projects/Poseur/configs/synthetic_poseur_rcnn.yaml"])
def test_regression_rcnn_configs_start_from_a_heatmap_keypoint_rcnn(config, tmp_path, caplog):
    """MODEL.WEIGHTS of a heatmap Keypoint R-CNN: the detector loads whole and the regression head's
    conv stack starts from the heatmap head's first convs (MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD)."""
    heatmap = build_model(_cfg("configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml"))
    DetectionCheckpointer(heatmap, save_dir=str(tmp_path)).save("heatmap")
    weights = str(tmp_path / "heatmap.pth")
    src = heatmap.state_dict()

    model = build_model(_cfg(config))
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(model).load(weights)
    head = model.roi_heads.keypoint_head
    assert len(head.convs) == 4  # the heatmap head's four convs
    for i, conv in enumerate(head.convs):
        torch.testing.assert_close(conv.weight, src[f"roi_heads.keypoint_head.conv_fcn{i + 1}.weight"])
    torch.testing.assert_close(model.roi_heads.box_head.fc1.weight, src["roi_heads.box_head.fc1.weight"])
    assert "4 of 4 convs start from the heatmap head's conv_fcn1, conv_fcn2, conv_fcn3, conv_fcn4" in caplog.text

    fresh = build_model(_cfg(config, **{"MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD": False}))
    DetectionCheckpointer(fresh).load(weights)
    assert not torch.equal(fresh.roi_heads.keypoint_head.convs[0].weight, src["roi_heads.keypoint_head.conv_fcn1.weight"])


@pytest.mark.parametrize("config", ["projects/RLE/configs/synthetic_rle_rcnn.yaml", "projects/Poseur/configs/synthetic_poseur_rcnn.yaml"])
def test_deconv_coords_reproduce_the_heatmap_heads_logits(config, tmp_path):
    """MODEL.ROI_REGRESSION.COORDS "deconv" loaded from a heatmap Keypoint R-CNN: the same 56 x 56
    logits as Detectron2's KRCNNConvDeconvUpsampleHead on the same ROI features, and mu their
    soft-argmax on the heatmap bins' centres."""
    from d2pose.modeling.integral import soft_argmax
    from d2pose.modeling.roi_regression import ROI_CODEC, ROIDeconvCoords

    heatmap = build_model(_cfg("configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml")).eval()
    torch.manual_seed(3)
    with torch.no_grad():  # a trained-looking predictor instead of the near-zero init
        for p in heatmap.roi_heads.keypoint_head.parameters():
            p.normal_(0, 0.05)
    DetectionCheckpointer(heatmap, save_dir=str(tmp_path)).save("heatmap")
    model = build_model(_cfg(config)).eval()
    DetectionCheckpointer(model).load(str(tmp_path / "heatmap.pth"))
    head = model.roi_heads.keypoint_head
    branch = head.heatmap if hasattr(head, "heatmap") else head.coarse_heatmap
    assert isinstance(branch, ROIDeconvCoords)

    x = torch.randn(3, 128, 14, 14)
    with torch.no_grad():
        expected = heatmap.roi_heads.keypoint_head.layers(x)
        feats = head.convs(x)
        mu, logits = branch(feats, feats.mean(dim=(2, 3)), return_logits=True)
    assert logits.shape == expected.shape == (3, 17, 56, 56)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mu, soft_argmax(expected, ROI_CODEC))
    # a peaked map at bin (i, j) puts mu at that bin's centre, (j + 0.5) / 56 of the box
    peaked = torch.full((1, 1, 56, 56), -50.0)
    peaked[0, 0, 10, 41] = 50.0
    torch.testing.assert_close(soft_argmax(peaked, ROI_CODEC)[0, 0], torch.tensor([41.5 / 56, 10.5 / 56]))
