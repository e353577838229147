"""train_net.py and DefaultPredictor protect what a user has: no run replaces another silently,
evaluation refuses weights that leave the model partly random, a non-finite loss stops training
with a message naming the iteration and the term, before it touches the weights."""
import os
import subprocess
import sys

import pytest
import torch

import d2pose  # noqa: F401
from d2pose.checkpoint.strict import CheckpointMismatchError, strict_checkpoint_loading
from d2pose.engine.finite import NonFiniteLossError, install_finite_loss_check

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "DATASETS.TRAIN", "('synthetic_pose_val_mini',)", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.WARMUP_ITERS", "0"]


def _train_net(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


@pytest.mark.slow
def test_training_twice_into_one_output_dir(tmp_path):
    out = tmp_path / "run"
    cfg = ["--config-file", os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml")]
    first = _train_net(*cfg, *TINY, "OUTPUT_DIR", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    final = (out / "model_final.pth").read_bytes()
    # a second run into the same folder is refused and leaves the first run's files as they were
    second = _train_net(*cfg, *TINY, "OUTPUT_DIR", str(out))
    assert second.returncode != 0 and "holds another run" in second.stderr and "--resume" in second.stderr
    assert (out / "model_final.pth").read_bytes() == final
    # --resume after the overrides is read as the flag (not as a key without a value)
    resumed = _train_net(*cfg, *TINY, "OUTPUT_DIR", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # --overwrite moves the first run aside, nothing is lost
    third = _train_net(*cfg, *TINY, "OUTPUT_DIR", str(out), "--overwrite")
    assert third.returncode == 0, third.stderr[-3000:]
    (kept,) = list((out / "previous_runs").iterdir())
    assert (kept / "model_final.pth").read_bytes() == final and (kept / "config.yaml").exists()
    assert (out / "model_final.pth").exists()
    # --eval-only never refuses the folder, writes into a subfolder of its own, and needs weights
    empty = _train_net(*cfg, "--eval-only", "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(out))
    assert empty.returncode != 0 and "MODEL.WEIGHTS is empty" in empty.stderr
    ev = _train_net(*cfg, "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(out),
                    "DATASETS.TEST", "('synthetic_pose_val_mini',)")
    assert ev.returncode == 0, ev.stderr[-3000:]
    (sub,) = list((out / "eval").iterdir())
    assert sub.name.endswith("_model_final") and (sub / "config.yaml").exists()
    assert (sub / "inference" / "synthetic_pose_val_mini" / "keypoints_results.json").exists()
    # an odd number of override tokens is an error that names the dangling key
    odd = _train_net(*cfg, "--eval-only", "MODEL.WEIGHTS")
    assert odd.returncode != 0 and "'MODEL.WEIGHTS' has no value" in odd.stderr


def _small():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_strict_loading_names_missing_mismatched_and_unexpected_tensors(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    state = _small().state_dict()
    del state["2.bias"]
    state["0.weight"] = torch.zeros(5, 3)
    state["extra.w"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "partial.pth")
    model = _small()
    # training-style loading keeps Detectron2's behaviour (warnings, partial load)
    DetectionCheckpointer(model).load(str(tmp_path / "partial.pth"))
    with strict_checkpoint_loading(), pytest.raises(CheckpointMismatchError) as e:
        DetectionCheckpointer(model).load(str(tmp_path / "partial.pth"))
    msg = str(e.value)
    assert "partial.pth" in msg and "2.bias" in msg and "0.weight (checkpoint (5, 3), model (4, 3))" in msg
    assert "extra.w" in msg
    torch.save({"model": _small().state_dict()}, tmp_path / "good.pth")
    with strict_checkpoint_loading():
        DetectionCheckpointer(model).load(str(tmp_path / "good.pth"))


def test_default_predictor_refuses_a_checkpoint_that_does_not_fit(tmp_path, caplog):
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    from d2pose.config import add_d2pose_config

    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    predictor = DefaultPredictor(cfg)  # untrained: usable (tests, export), with one warning
    state = {k: v for k, v in predictor.model.state_dict().items() if "head" not in k}
    torch.save({"model": state}, tmp_path / "backbone_only.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "backbone_only.pth")
    with pytest.raises(CheckpointMismatchError, match=r"backbone_only\.pth does not fit the model .* missing"):
        DefaultPredictor(cfg)
    torch.save({"model": predictor.model.state_dict()}, tmp_path / "full.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "full.pth")
    DefaultPredictor(cfg)


def test_pose_predictor_loads_strictly_without_safeguards(tmp_path):
    """d2pose's own predictor needs no change to Detectron2's classes to refuse weights that do not fit."""
    from d2pose.config import get_d2pose_cfg
    from d2pose.engine import PosePredictor

    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    installed = d2pose.safeguards.installed()
    d2pose.uninstall_safeguards()
    try:
        untrained = PosePredictor(cfg)
        state = {k: v for k, v in untrained.model.state_dict().items() if "head" not in k}
        torch.save({"model": state}, tmp_path / "backbone_only.pth")
        cfg.MODEL.WEIGHTS = str(tmp_path / "backbone_only.pth")
        with pytest.raises(CheckpointMismatchError, match=r"backbone_only\.pth does not fit the model .* missing"):
            PosePredictor(cfg)
        torch.save({"model": untrained.model.state_dict()}, tmp_path / "full.pth")
        cfg.MODEL.WEIGHTS = str(tmp_path / "full.pth")
        loaded = PosePredictor(cfg)
        assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in untrained.model.state_dict().items())
        cfg.MODEL.WEIGHTS = str(tmp_path / "missing.pth")
        with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
            PosePredictor(cfg)
    finally:
        if installed:
            d2pose.install_safeguards()


class _Toy(torch.nn.Module):
    """A model whose second loss term is NaN from iteration `bad_at` on."""

    def __init__(self, bad_at):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.calls, self.bad_at = 0, bad_at

    def forward(self, batch):
        self.calls += 1
        loss_b = (self.w ** 2).sum() * (float("nan") if self.calls > self.bad_at else 1.0)
        return {"loss_a": self.w.sum(), "loss_b": loss_b}


def test_non_finite_loss_stops_before_the_step_naming_iteration_and_term():
    from detectron2.engine import SimpleTrainer

    model = _Toy(bad_at=3)
    data = iter(lambda: [0], None)
    trainer = SimpleTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.1))
    install_finite_loss_check(trainer, lambda: "out/model_0000001.pth")
    seen = []

    from detectron2.engine import HookBase

    class Hook(HookBase):
        def after_step(self):
            seen.append(model.w.detach().clone())

    trainer.register_hooks([Hook()])
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train(0, 10)
    msg = str(e.value)
    assert "iteration 3" in msg and "loss_b = nan" in msg and "loss_a" in msg and "out/model_0000001.pth" in msg
    assert "loss_a = " in msg.split("finite terms:")[1]
    # three good steps were taken; the failing one did not change the weights
    assert len(seen) == 3 and torch.equal(model.w.detach(), seen[-1]) and torch.isfinite(model.w).all()


def test_missing_weights_file_is_named_before_anything_runs(tmp_path):
    """A fine-tuning config whose base run was never trained: the launcher names MODEL.WEIGHTS and the
    config file and leaves OUTPUT_DIR as it was; DefaultPredictor names the key too."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    from d2pose.checkpoint import check_weights_file
    from d2pose.config import add_d2pose_config

    check_weights_file("")  # random initialisation
    check_weights_file("detectron2://ImageNetPretrained/MSRA/R-50.pkl")  # Detectron2 resolves these
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS '.*nope.pth' \(set in my.yaml"):
        check_weights_file(str(tmp_path / "nope.pth"), "my.yaml")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        check_weights_file(str(tmp_path))
    config = os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_rcnn.yaml")
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    missing = str(tmp_path / "no_heatmap_run" / "model_final.pth")
    run = _train_net("--config-file", config, "MODEL.WEIGHTS", missing, "OUTPUT_DIR", str(out), "--overwrite")
    assert run.returncode != 0 and "MODEL.WEIGHTS" in run.stderr and missing in run.stderr
    assert "synthetic_rle_rcnn.yaml" in run.stderr and "Traceback" not in run.stderr
    assert sorted(os.listdir(out)) == ["keep.txt"]  # --overwrite moved nothing
    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = missing
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        DefaultPredictor(cfg)
