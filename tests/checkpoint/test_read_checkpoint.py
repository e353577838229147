"""Tests of d2pose.checkpoint.read_checkpoint, the reader of official checkpoints the converters use:
plain, mmcv-style, DDP-prefixed and safetensors files, and refusal of pickled objects."""
import numpy as np
import pytest
import torch

from d2pose.checkpoint import read_checkpoint


def test_read_checkpoint_formats(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(2)}
    torch.save(sd, tmp_path / "plain.pth")
    # mmcv: weights under "state_dict", numpy values in the metadata
    torch.save({"meta": {"epoch": 3, "hook_msgs": {"best_score": np.float64(0.75), "x": np.arange(2)}},
                "state_dict": sd}, tmp_path / "mmcv.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("plain.pth", "mmcv.pth", "ddp.pth", "w.safetensors"):
        got = read_checkpoint(str(tmp_path / name))
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), name


class _NotData:
    pass


def test_read_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(1)}, "hook": _NotData()}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="_NotData"):
        read_checkpoint(str(tmp_path / "code.pth"))
    with pytest.raises(FileNotFoundError):
        read_checkpoint(str(tmp_path / "absent.pth"))
