"""Tests of what the command-line tools run: dataset drawing (d2pose.utils.visualizer), the operator
and model benchmarks (d2pose.layers.ops_benchmark, d2pose.modeling.benchmark) and Poseur's look inside
its decoder (d2pose_poseur.visualize)."""
import json
import os
import subprocess
import sys
import time

import pytest

from d2pose.layers.ops_benchmark import benchmark_ops
from d2pose.modeling import benchmark as bench
from d2pose.utils.visualizer import visualize_dataset
from d2pose_poseur import visualize as vis_poseur

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_visualize_data(shared_data, tmp_path):
    from d2pose.data import register_keypoint_dataset
    from detectron2.data import DatasetCatalog

    name = "test_tools_vis_coco"
    if name not in DatasetCatalog.list():
        register_keypoint_dataset(name, os.path.join(shared_data, "coco/annotations/test_coco.json"),
                                  os.path.join(shared_data, "coco/images"))
    preds = os.path.join(shared_data, "coco/predictions/example_coco_preds.json")
    out = visualize_dataset(name, str(tmp_path), num=2, predictions=preds)
    assert len(out) == 2 and all(os.path.getsize(p) > 10000 for p in out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        visualize_dataset(name, str(tmp_path), num=1)


def test_benchmark_ops_quick(capsys):
    rows = benchmark_ops(threads=2, repeats=1, quick=True)
    assert len(rows) >= 10 and all(r["t_ref"] > 0 and r["t_fast"] > 0 for r in rows)
    assert "ratio" in capsys.readouterr().out


def test_poseur_statistics_show_the_samples_off_the_coarse_maps(capsys):
    """--stats on an untrained model: uniform attention over the four levels; with Deformable-DETR's
    offsets most stride-32 samples of a 64 x 96 crop fall off the 2 x 3 map, with offsets on the
    finest level's cells none do, and every level samples the same ring."""
    base = ["--config-file", os.path.join(ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"), "--stats", "4"]
    level = vis_poseur.main(base)
    assert set(level["stages"]) == {"coarse", "layer0", "layer1", "layer2"} and level["num_crops"] == 4
    assert all(s["mean_px"] > 0 and s["median_sigma"] > 0 for s in level["stages"].values())
    for layer in level["layers"]:
        assert layer["level_share"] == pytest.approx([0.25] * 4, abs=1e-5)
    first = level["layers"][0]
    assert first["level_outside"][3] > 0.5 and first["level_outside"][0] == 0.0
    assert first["level_distance"][3] > 4 * first["level_distance"][0]
    finest = vis_poseur.main(base + ["MODEL.POSEUR.OFFSET_INIT", "finest"])["layers"][0]
    assert max(finest["level_outside"]) < 0.05
    assert finest["level_distance"] == pytest.approx([finest["level_distance"][0]] * 4, rel=0.05)
    printed = capsys.readouterr().out
    assert "attention share" in printed and "layer2" in printed


def test_visualize_poseur_untrained(tmp_path):
    args = ["--config-file", os.path.join(ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"), "--num", "2",
            "--keypoint", "right_knee", "--output-dir", str(tmp_path)]
    out = vis_poseur.main(args)
    assert len(out) == 2 and all(os.path.getsize(p) > 5000 for p in out)
    import cv2

    img = cv2.imread(out[0])
    # coarse + 3 decoder layers + prediction panels, each the config's crop upscaled x4
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"))
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    assert img.shape[:2] == (H * 4, W * 4 * 5)
    with pytest.raises(FileExistsError, match="--overwrite"):
        vis_poseur.main(args)
    with pytest.raises(SystemExit, match="--keypoint"):
        vis_poseur.main(args[:-1] + [str(tmp_path / "x")] + ["--keypoint", "tail"])


def test_benchmark_model_vs_backbone(capsys):
    times = bench.main(["--config-file", os.path.join(ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"),
                        "--repeats", "1", "--threads", "1"])
    assert set(times) == {"backbone", "backbone, crop + mirror", "model", "model + flip",
                          "end to end (1 person, flip)", "  crop + warp", "  image coords + Instances",
                          "outside_fraction", "summary"}
    assert all(times[k] > 0 for k in times if k not in ("outside_fraction", "summary"))
    out = capsys.readouterr().out
    assert "x backbone" in out and "outside the network" in out
    # the header says what the times are a fraction of
    for part in ("machine:", "capability", "1 threads", "precision float32", "GFLOP/s conv", "GFLOP/s matmul"):
        assert part in out, part
    assert "% of the measured conv peak" in out


def test_benchmark_capacity_stops_at_memory_and_budget(monkeypatch):
    import numpy as np

    held = []

    def run(b):  # 40 MiB per input, touched, freed after the call
        block = np.ones(b * 40 * 2**20 // 8)
        held.append(block.sum())

    cap = bench.capacity(run, max_batch=4, latency_repeats=1)
    assert [r[0] for r in cap["rows"]] == [1, 2, 4] and cap["batch"] == 4 and cap["limit"] == "batch 4 reached"
    # peak memory grows with the batch: measured in a fresh interpreter, where the blocks land on new
    # pages (late in the suite this process holds GBs of freed but resident heap an allocation may reuse)
    script = ("import json, sys, numpy as np\n"
              "from d2pose.modeling.benchmark import capacity\n"
              "held = []\n"
              "cap = capacity(lambda b: held.append(np.ones(b * 40 * 2**20 // 8).sum()), max_batch=4,\n"
              "               latency_repeats=1)\n"
              "print(json.dumps([r[2] for r in cap['rows']]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    assert peaks[-1] >= peaks[0] + 100, peaks
    # a machine with little memory left: the search stops before the batch that would not fit
    with monkeypatch.context() as patch:
        patch.setattr(bench, "available_memory_mib", lambda device="cpu": cap["rows"][0][2] + 60)
        small = bench.capacity(run, max_batch=32, latency_repeats=1)
    assert small["batch"] < 32 and small["limit"].startswith("memory")
    slow = bench.capacity(lambda b: time.sleep(0.05 * b), max_batch=32, budget_s=1.0, latency_repeats=1)
    assert slow["limit"].startswith("time budget") and slow["batch"] < 32
    assert slow["throughput"] == pytest.approx(slow["batch"] / slow["rows"][-1][1])


def test_benchmark_appends_every_kind_to_a_markdown_file(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    configs = ["projects/Poseur/configs/synthetic_poseur_topdown.yaml", "projects/RLE/configs/synthetic_rle_rcnn.yaml",
               "projects/LOGOCAP/configs/synthetic_logocap.yaml"]
    results = bench.main(["--config-file", *[os.path.join(ROOT, c) for c in configs], "--repeats", "1",
                          "--max-batch", "2", "--append", str(out)])
    assert [r["summary"]["kind"] for r in results] == ["top-down", "Keypoint R-CNN", "bottom-up"]
    text = out.read_text()
    assert text.startswith("# d2pose benchmarks") and "capability" in text and "measured peak" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == configs
    for r in results:
        s = r["summary"]
        assert s["params_m"] > 0 and s["gflops"] > 0 and s["latency_ms"] > 0 and s["throughput"] > 0
        assert s["batch"] == 2 and s["peak_mib"] > 100 and 0 < s["backbone_share"] < 1.5
    bench.main(["--config-file", os.path.join(ROOT, configs[0]), "--repeats", "1", "--max-batch", "1",
                "--append", str(out)])
    again = out.read_text()
    assert again.startswith(text) and again.count("# d2pose benchmarks") == 1 and again.count("\n## ") == 2
