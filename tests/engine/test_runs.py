"""Tests of reading finished runs back (d2pose.engine.runs) and tools/compare_runs.py."""
import json
import os
import subprocess
import sys

import pytest

from d2pose.engine.runs import RunSummary, final_metrics, format_runs, logged_training_seconds, run_summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(folder, seconds_line, metric_rows):
    os.makedirs(folder)
    with open(os.path.join(folder, "log.txt"), "w") as f:
        f.write("[12/07 12:00:00] d2.engine.train_loop INFO: Starting training from iteration 0\n")
        f.write(seconds_line)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for row in metric_rows:
            f.write(json.dumps(row) + "\n")


def test_run_summary_reads_time_and_last_evaluation(tmp_path):
    folder = str(tmp_path / "run")
    _run(folder, "[12/07 12:13:44] d2.engine.hooks INFO: Overall training speed: 2198 iterations in 0:16:55 "
                 "(0.4620 s / it)\n",
         [{"iteration": 19, "total_loss": 1.0}, {"iteration": 999, "keypoints/AP": 1.5},
          {"iteration": 1999, "total_loss": 0.5}, {"iteration": 2200, "keypoints/AP": 3.25, "keypoints/AP50": 13.0,
                                                   "bbox/AP": 40.0}])
    r = run_summary(folder)
    assert (r.iterations, r.training_seconds) == (2198, 16 * 60 + 55.0)
    assert r.minutes == pytest.approx(16.9166, abs=1e-3)
    assert r.metrics == {"keypoints": {"AP": 3.25, "AP50": 13.0}, "bbox": {"AP": 40.0}}
    table = format_runs([r, RunSummary("unfinished")], names=["LOGO-CAP"])
    assert table[2] == "| LOGO-CAP | 2198 | 16.9 | 3.2 | 13.0 | - | - |"
    assert table[3] == "| unfinished | - | - | - | - | - | - |"


def test_days_in_the_speed_line_and_unfinished_runs(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("Overall training speed: 90000 iterations in 1 day, 2:03:04 (1.2 s / it)\n")
    assert logged_training_seconds(str(log)) == (90000, float((26 * 60 + 3) * 60 + 4))
    log.write_text("iter: 19 total_loss: 1.0\n")
    assert logged_training_seconds(str(log)) == (None, None)


def test_bad_folders_and_metrics_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no log.txt or metrics.json"):
        run_summary(str(tmp_path))
    bad = tmp_path / "metrics.json"
    bad.write_text('{"iteration": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.json: a line is not json"):
        final_metrics(str(bad))


def test_compare_runs_prints_one_row_per_folder(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _run(a, "Overall training speed: 100 iterations in 0:01:40 (1.0 s / it)\n", [{"keypoints/AP": 10.0}])
    _run(b, "Overall training speed: 50 iterations in 0:01:40 (2.0 s / it)\n", [{"keypoints/AP": 20.0}])
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compare_runs.py"), a, b, "--names", "A", "B"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "| A | 100 | 1.7 | 10.0 |" in out and "| B | 50 | 1.7 | 20.0 |" in out and "CPU capability" in out
