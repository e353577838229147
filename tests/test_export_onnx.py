"""ONNX export of the crop-based pose models (d2pose.export, tools/export_onnx.py): onnxruntime
against the PyTorch model on uint8 crops of another batch size than the export's (the dynamic
axis), flip test inside the graph, and the models that are refused."""
import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from d2pose.config import get_d2pose_cfg
from d2pose.export import command as export_command
from d2pose.export import (BATCH_AXIS, INPUT_NAME, CropPoseModel, check_exportable_config, export_onnx,
                           max_relative_errors, reference_deformable_attention, run_onnx)
from d2pose.modeling import build_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# method -> (config, overrides)
CASES = {
    "rle": ("projects/RLE/configs/synthetic_rle_topdown.yaml", []),
    "poseur": ("projects/Poseur/configs/synthetic_poseur_topdown.yaml", ["MODEL.MS_DEFORM_ATTN.BACKEND", "torch"]),
    "transpose": ("projects/TransPose/configs/synthetic_transpose_r.yaml", []),
}
EXTRAS = {"rle": ["pred_keypoint_sigmas"], "poseur": ["pred_keypoint_sigmas"], "transpose": []}
TOL = 1e-4  # max |onnxruntime - PyTorch| / the output's largest magnitude


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(config, opts=()):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    # float32 inference whatever the CPU ("auto" would be bfloat16 where it is native)
    cfg.merge_from_list(list(opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "TEST.AUTOCAST_DTYPE", ""])
    return cfg


def _randomize(model: nn.Module) -> None:
    """Random BatchNorm statistics and affine parameters, and head layers of unit gain: a fresh head
    starts near-constant (weights of std 0.001, zero-initialised branches), which would compare
    almost nothing."""
    g = torch.Generator().manual_seed(0)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                uniform(m.running_mean, -0.2, 0.2)
                uniform(m.running_var, 0.5, 1.5)
                uniform(m.weight, 0.5, 1.5)
                uniform(m.bias, -0.2, 0.2)
        for m in model.head.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    uniform(m.bias, -0.1, 0.1)


def _model(method):
    config, opts = CASES[method]
    torch.manual_seed(0)
    model = build_model(_cfg(config, opts)).eval()
    _randomize(model)
    return model


def _crops(model, n, seed=1):
    W, H = model.input_size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("method", sorted(CASES))
def test_onnxruntime_matches_pytorch(method, tmp_path):
    model = _model(method)
    assert model.flip_test and model.flip_indices is not None
    path = str(tmp_path / f"{method}.onnx")
    names = export_onnx(model, path, batch=2)
    assert names == ["keypoints", "scores"] + EXTRAS[method]
    assert not model.training  # the export restores the modules' modes

    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] and [o.name for o in graph.output] == names
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(v.type.tensor_type.shape.dim[0].dim_param == BATCH_AXIS for v in list(graph.input) + list(graph.output))

    crops = _crops(model, 3)  # not the export's batch of 2
    wrapper = CropPoseModel(model)
    with torch.no_grad():
        ours = [t.numpy() for t in wrapper(crops)]
        from_float = [t.numpy() for t in wrapper(crops.float())]
        coords, scores, extras = model._predict_crops(crops)
    assert all(np.array_equal(a, b) for a, b in zip(ours, from_float))
    # the wrapper is the model's own inference (flip test included)
    real = [coords, scores] + [extras[k] for k in sorted(extras)]
    assert max(max_relative_errors(ours, [t.numpy() for t in real])) <= 1e-6

    outputs = run_onnx(path, crops.numpy(), intra_op_num_threads=1)
    K = model.head.num_keypoints
    assert outputs[0].shape == (3, K, 2) and outputs[1].shape == (3, K)
    assert all(o.dtype == np.float32 for o in outputs)
    errors = max_relative_errors(outputs, ours)
    print(method, dict(zip(names, errors)))
    assert max(errors) <= TOL, dict(zip(names, errors))
    # a comparison of something: keypoints differ between crops and between keypoints
    assert ours[0].std(axis=0).mean() > 0.1 and ours[0].std(axis=1).mean() > 1.0


def test_deformable_attention_switched_to_the_reference_for_the_export(caplog):
    from d2pose.layers import EMSDA

    head = nn.Sequential(EMSDA(32, 4, 2, 2, backend="auto"), EMSDA(32, 4, 2, 2, backend="torch"))
    with caplog.at_level(logging.INFO, logger="d2pose.export"):
        with reference_deformable_attention(head):
            assert [m.backend for m in head] == ["torch", "torch"]
    assert [m.backend for m in head] == ["auto", "torch"]
    assert "MODEL.MS_DEFORM_ATTN.BACKEND ['auto'] to 'torch'" in caplog.text


def test_keypoint_rcnn_is_refused(tmp_path):
    cfg = _cfg("projects/RLE/configs/synthetic_rle_rcnn.yaml")
    with pytest.raises(NotImplementedError, match="MODEL.META_ARCHITECTURE 'PoseRCNN'"):
        check_exportable_config(cfg)
    model = build_model(cfg).eval()
    path = tmp_path / "rcnn.onnx"
    with pytest.raises(NotImplementedError, match="MODEL.META_ARCHITECTURE 'PoseRCNN'.*Keypoint R-CNN"):
        export_onnx(model, str(path))
    with pytest.raises(NotImplementedError, match="TopDownPoseEstimator"):
        CropPoseModel(model)
    assert not path.exists()


def _tool():
    return export_command


def test_tool_exports_checks_and_refuses_to_overwrite(tmp_path, capsys):
    tool = _tool()
    out = str(tmp_path / "rle_gap.onnx")
    args = ["--config-file", os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_gap_topdown.yaml"), "--output", out,
            "--batch", "1", "--no-flip", "--check", "TEST.AUTOCAST_DTYPE", ""]
    result = tool.main(args)
    assert result["names"] == ["keypoints", "scores", "pred_keypoint_sigmas"]
    assert set(result["errors"]) == set(result["names"]) and max(result["errors"].values()) <= TOL
    printed = capsys.readouterr().out
    assert "flip test off" in printed and "max |a - b| / max(max |b|, 1e-6)" in printed
    stamp = os.path.getmtime(out)
    with pytest.raises(SystemExit, match="--overwrite"):
        tool.main(args)
    assert os.path.getmtime(out) == stamp
    with pytest.raises(SystemExit, match="error: MODEL.META_ARCHITECTURE 'PoseRCNN'"):
        tool.cli(["--config-file", os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_rcnn.yaml"), "--output",
                  str(tmp_path / "rcnn.onnx")])
