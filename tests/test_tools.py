"""Tests of the command-line tools."""
import os

import pytest

from tests.conftest import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    return load_tool(name)


def test_visualize_data(shared_data, tmp_path):
    from d2pose.data import register_keypoint_dataset
    from detectron2.data import DatasetCatalog

    name = "test_tools_vis_coco"
    if name not in DatasetCatalog.list():
        register_keypoint_dataset(name, os.path.join(shared_data, "coco/annotations/test_coco.json"),
                                  os.path.join(shared_data, "coco/images"))
    vis = _load("visualize_data")
    preds = os.path.join(shared_data, "coco/predictions/example_coco_preds.json")
    out = vis.main(["--dataset", name, "--output-dir", str(tmp_path), "--num", "2", "--predictions", preds])
    assert len(out) == 2 and all(os.path.getsize(p) > 10000 for p in out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        vis.main(["--dataset", name, "--output-dir", str(tmp_path), "--num", "1"])


def test_benchmark_ops_quick(capsys):
    bench = _load("benchmark_ops")
    rows = bench.main(["--quick", "--repeats", "1"])
    assert len(rows) >= 10 and all(r["t_ref"] > 0 and r["t_fast"] > 0 for r in rows)
    assert "ratio" in capsys.readouterr().out


def test_visualize_poseur_untrained(tmp_path):
    vis = _load("visualize_poseur")
    args = ["--config-file", os.path.join(ROOT, "configs/Poseur/synthetic_poseur_topdown.yaml"), "--num", "2",
            "--keypoint", "right_knee", "--output-dir", str(tmp_path)]
    out = vis.main(args)
    assert len(out) == 2 and all(os.path.getsize(p) > 5000 for p in out)
    import cv2

    img = cv2.imread(out[0])
    # coarse + 3 decoder layers + prediction panels, each the config's crop upscaled x4
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/Poseur/synthetic_poseur_topdown.yaml"))
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    assert img.shape[:2] == (H * 4, W * 4 * 5)
    with pytest.raises(FileExistsError, match="--overwrite"):
        vis.main(args)
    with pytest.raises(SystemExit, match="--keypoint"):
        vis.main(args[:-1] + [str(tmp_path / "x")] + ["--keypoint", "tail"])


def test_benchmark_model_vs_backbone(capsys):
    bench = _load("benchmark")
    times = bench.main(["--config-file", os.path.join(ROOT, "configs/Poseur/synthetic_poseur_topdown.yaml"),
                        "--repeats", "1", "--threads", "1"])
    assert set(times) == {"backbone", "model", "model + flip", "end to end (1 person, flip)", "  crop + warp",
                          "  image coords + Instances", "outside_fraction"}
    assert all(times[k] > 0 for k in times if k != "outside_fraction")
    out = capsys.readouterr().out
    assert "x backbone" in out and "outside the network" in out
    # the header says what the times are a fraction of
    for part in ("machine:", "capability", "1 threads", "precision float32", "GFLOP/s conv", "GFLOP/s matmul"):
        assert part in out, part
    assert "% of the measured conv peak" in out
