"""`visualize_data.py --predictions` (d2pose.utils.visualizer.draw_record) draws the ground truth and
the predictions side by side, each panel under its caption; without predictions, one panel as before."""
import cv2
import numpy as np

import d2pose  # noqa: F401  (registers the datasets)
from d2pose.utils.visualizer import PANEL_CAPTIONS, caption, draw_record


def _record(tmp_path):
    path = tmp_path / "person.jpg"
    cv2.imwrite(str(path), np.full((120, 90, 3), 100, np.uint8))
    kps = [float(v) for i in range(17) for v in (20 + 3 * i, 20 + 5 * i, 2)]
    annotation = {"bbox": [15.0, 15.0, 60.0, 95.0], "bbox_mode": 1, "category_id": 0, "keypoints": kps, "iscrowd": 0}
    return {"file_name": str(path), "image_id": 7, "height": 120, "width": 90, "annotations": [annotation]}


def _bright_columns(band: np.ndarray) -> np.ndarray:
    return np.nonzero((band.min(axis=2) > 200).any(axis=0))[0]


def test_each_panel_has_its_caption(tmp_path):
    record = _record(tmp_path)
    alone = draw_record(record, {})
    assert alone.shape == (120, 90, 3)  # one panel: no caption
    prediction = {"image_id": 7, "category_id": 1, "keypoints": record["annotations"][0]["keypoints"], "score": 0.9}
    both = draw_record(record, {}, {7: [prediction]})
    band = both.shape[0] - 120
    assert both.shape[1] == 180 and band >= 18
    assert both[band:].shape[:2] == (120, 180)  # each panel under its band
    text = _bright_columns(both[:band])
    assert (text < 90).any() and (text >= 90).any()  # white text over each panel
    assert PANEL_CAPTIONS == ("ground truth", "predictions")
    # each band is caption()'s with that panel's text
    for i, text in enumerate(PANEL_CAPTIONS):
        np.testing.assert_array_equal(both[:band, 90 * i: 90 * (i + 1)], caption(np.zeros_like(alone), text)[:band])
    assert not np.array_equal(both[:band, :90], both[:band, 90:])
