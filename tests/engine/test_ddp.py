"""Distributed training through Detectron2's `launch` on the CPU (Gloo): 2 processes with 2 images
each give the same parameters as 1 process with 4, on a model without batch statistics (GroupNorm
ResNet-18 + FPN + the RLE integral head, whose loss is a mean over the crops: DDP's gradient average
of per-process means is the global mean)."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITERS = 5
# no augmentation (each process maps its own samples with its own RNG), a fixed seed (model init and
# the shared sampler order), float32 (bfloat16 would round the two layouts differently), SGD at a
# learning rate this from-scratch model trains stably at (at 0.01 it diverges within 3 steps and
# float rounding, amplified, then decides the comparison)
COMMON = ["MODEL.RESNETS.NORM", "GN", "SOLVER.MAX_ITER", str(ITERS), "SOLVER.IMS_PER_BATCH", "4",
          "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.0005", "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()",
          "SOLVER.AUTOCAST_DTYPE", "float32", "SOLVER.CHECKPOINT_PERIOD", "1000", "SEED", "7",
          "DATASETS.TRAIN", "('synthetic_pose_val_mini',)", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
          "DATALOADER.ASPECT_RATIO_GROUPING", "False", "INPUT.TOPDOWN.CACHE_IMAGES", "False",
          "INPUT.TOPDOWN.FLIP_PROB", "0.0", "INPUT.TOPDOWN.ROTATION_PROB", "0.0", "INPUT.TOPDOWN.HALF_BODY_PROB", "0.0",
          "INPUT.TOPDOWN.SCALE_FACTOR", "0.0"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(num_procs, out):
    # a port of its own: Detectron2's default one is fixed per user, so two runs at once would collide
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--num-gpus", str(num_procs),
           "--dist-url", f"tcp://127.0.0.1:{_free_port()}", "--config-file",
           os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"), *COMMON, "OUTPUT_DIR", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"], res.stderr


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_total_batch(tmp_path):
    single, _ = _run(1, tmp_path / "one")
    double, log = _run(2, tmp_path / "two")
    assert "World size: 2" in (tmp_path / "two" / "log.txt").read_text()  # really two processes
    assert (tmp_path / "two" / "log.txt.rank1").exists()
    assert single.keys() == double.keys()
    init = _run_init(tmp_path)
    moved = 0
    for k in single:
        a, b = single[k].double(), double[k].double()
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=lambda m: f"{k}: {m}")
        if k in init and not torch.equal(init[k], single[k]):
            moved += 1
    assert moved > 0.5 * len(init)  # training did change the weights (the comparison is not of inits)


def _run_init(tmp_path):
    """The same config's initial weights (0 iterations) to show training moved them."""
    from detectron2.config import get_cfg
    from detectron2.utils.env import seed_all_rng

    import d2pose  # noqa: F401
    from d2pose.config import add_d2pose_config
    from d2pose.modeling import build_model

    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    cfg.merge_from_list(COMMON)
    seed_all_rng(7)
    return {k: v.detach().clone() for k, v in build_model(cfg).state_dict().items()}
