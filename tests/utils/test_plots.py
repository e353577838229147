"""plot_training on a synthetic metrics.json as Detectron2's JSONWriter writes it: loss lines every
few iterations, evaluation lines with "keypoints/AP", a resumed iteration written twice, a line cut
short by a killed run."""
import json

import cv2
import pytest

from d2pose.utils.plots import plot_training, read_metrics


@pytest.fixture
def metrics_json(tmp_path):
    lines = [json.dumps({"iteration": i, "total_loss": 10.0 - i / 10, "loss_x": 6.0, "lr": 0.001})
             for i in range(19, 100, 20)]
    lines += [json.dumps({"iteration": i, "keypoints/AP": ap, "keypoints/AP50": 2 * ap})
              for i, ap in ((39, 2.5), (79, 6.0), (100, 8.5))]
    lines.append(json.dumps({"iteration": 79, "keypoints/AP": 7.0}))  # a resumed run's later line wins
    lines.append('{"iteration": 120, "total_l')  # cut short
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_read_metrics(metrics_json):
    series = read_metrics(metrics_json)
    assert series["keypoints/AP"] == [(39, 2.5), (79, 7.0), (100, 8.5)]
    assert series["total_loss"][0] == (19, pytest.approx(8.1)) and len(series["total_loss"]) == 5


def test_plot_training_writes_the_png(metrics_json, tmp_path):
    out = tmp_path / "plots" / "training.png"
    drawn = plot_training(metrics_json, str(out), reference=40.0, reference_label="shipped model, 2400 iterations")
    assert drawn["png"] == str(out) and [s for s, _ in drawn["ap"]] == [39, 79, 100] and len(drawn["loss"]) == 5
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (400, 1000, 3)


def test_plot_training_without_total_loss_or_ap(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps({"iteration": i, "loss_a": 1.0, "loss_b": 0.5 * i}) + "\n" for i in (19, 39)))
    drawn = plot_training(str(path), str(tmp_path / "p.png"))
    assert drawn["loss"] == [(19, 10.5), (39, 20.5)] and drawn["ap"] == []
    assert cv2.imread(str(tmp_path / "p.png")) is not None
