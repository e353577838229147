"""End-to-end learning on the synthetic benchmark through the real launcher (d2pose.engine.Trainer via
d2pose.engine.train_demo, the command line tools/train_demo.py): short schedules, measured OKS AP
from d2pose's evaluator on synthetic_pose_val_mini (64 images). The full synthetic configs (minutes each) are run on their own; these only check that
each method learns, far above an untrained model (AP ~0). Fixed iterations (`--time-budget 0`), the
precision the hardware gives ("auto").

Measured on 2026-12-01/02, 2 cores (training + evaluation + drawing, per test):
* AMD EPYC, AVX512 + AVX512_BF16 (bfloat16): RLE 500 it ~140 s (AP 4.9-5.4, seeds 1-2), Poseur
  200 it ~100 s (AP 1.5); the first test of a fresh clone also generates the training set (~75 s).
* the same machine forced to float32 (`D2POSE_NATIVE_BF16=0`), the path of AVX2-only CPUs: RLE 171 s
  (0.333 s/it, AP 12.7), Poseur 109 s (0.517 s/it, AP 3.2). On an AVX2 machine, scaled by the
  measured float32 peaks (x1.75: 166 / 201 vs 95 / 141 GFLOP/s conv / matmul): RLE ~300 s, Poseur
  ~190 s. The thresholds (2.0, 0.75) sit below the lower precision's AP with room for run-to-run
  noise (CI's CPU once measured 1.6 where this machine measured 2.2-3.3 at 300 RLE iterations)."""
import os

import pytest

from d2pose.engine import train_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("config,iters,min_ap", [
    # AP this early is noisy across machines (CI's CPU got 1.6 at 300 iterations where this machine
    # got 2.2-3.3 over seeds 1-3), so RLE trains 500: measured 5.4 / 4.9 (seeds 1 / 2); Poseur 1.5
    # (an untrained model: ~0.0); the thresholds leave room for that noise
    ("projects/RLE/configs/synthetic_rle_topdown.yaml", 500, 2.0),
    ("projects/Poseur/configs/synthetic_poseur_topdown.yaml", 200, 0.75),
    # TransPose: 300 iterations measured AP 15.1 (seed 1, 2026-12-02, AVX2 float32, 188 s with evaluation)
    ("projects/TransPose/configs/synthetic_transpose_r.yaml", 300, 5.0),
])
def test_topdown_model_learns(config, iters, min_ap, tmp_path):
    out = tmp_path / "run"
    # RLE's run also goes through the whole-image part of the demo with a person detector trained
    # for a few seconds (its AP is not judged: the plumbing is)
    whole = ["--detector-budget", "0.2", "--detector-cache", str(tmp_path / "detector"), "--num-images", "2"] \
        if "RLE" in config else ["--detector-budget", "0"]
    results = train_demo.main(["--config-file", os.path.join(ROOT, config), "--iters", str(iters), "--time-budget", "0",
                            "--output-dir", str(out), "--num-vis", "2", *whole,
                            "DATASETS.TEST", "('synthetic_pose_val_mini',)", "SOLVER.WARMUP_ITERS", "50", "SEED", "1"])
    ap = results["keypoints"]["AP"]
    assert ap >= min_ap, f"{config}: AP {ap:.1f} after {iters} iterations"
    assert (out / "model_final.pth").exists() and len(os.listdir(out / "vis")) == 2
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))  # TensorBoard
    if "RLE" in config:
        assert "whole_images" in results and len(os.listdir(out / "whole_images" / "vis")) == 3  # 2 + json
    if "TransPose" in config:  # the demo draws the dependency areas of a val person
        assert (out / "vis_dependency" / "synthetic_pose_val_mini_0_0.png").exists()
