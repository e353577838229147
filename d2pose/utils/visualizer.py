"""Drawing poses with Detectron2's `Visualizer`: a model's predictions (`PoseDrawer`, with track
ids and colours for video), a dataset's annotations beside predictions (`draw_record`,
`visualize_dataset`, each panel captioned: "ground truth", "predictions"), and the registry of the
per-method drawings the training demo makes (`register_demo_drawing`: a method package registers what
shows its model's inner workings).
"""
import colorsys
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

from ..evaluation.coco_results import coco_results_to_instances, load_coco_results

__all__ = ["track_color", "POSE_SCORE_LEGEND", "display_scores", "PoseDrawer", "PANEL_CAPTIONS", "caption",
           "draw_record", "visualize_dataset", "register_demo_drawing", "demo_drawing"]

logger = logging.getLogger("d2pose.visualize_data")

#: {MODEL.TOPDOWN.HEAD: drawing(config_file, dataset, weights, output_dir, num, opts)}
_DEMO_DRAWINGS: Dict[str, Callable] = {}


def track_color(track_id: int) -> Tuple[float, float, float]:
    """A stable, distinct RGB colour in [0, 1] per id (golden-ratio hues)."""
    return colorsys.hsv_to_rgb((0.61803398875 * int(track_id)) % 1.0, 0.85, 1.0)


#: the legend of drawings whose people carry no detector score
POSE_SCORE_LEGEND = "pose %: the person's pose score"


def display_scores(instances: Instances) -> Tuple[np.ndarray, bool]:
    """((R,) scores in [0, 1] that a drawing shows and thresholds, whether they are a detector's).

    The people's `scores`, in [0, 1] for every d2pose model (each method's pose score; a detector's own
    output, Keypoint R-CNN, gives its box scores beside `pred_classes`), so one threshold means the same
    for every method; without `scores`, the mean keypoint score clipped to [0, 1]."""
    if instances.has("scores"):
        return np.clip(instances.scores.numpy().astype(np.float64), 0.0, 1.0), instances.has("pred_classes")
    if instances.has("pred_keypoints") and instances.pred_keypoints.shape[1] > 0:
        kp_scores = np.clip(instances.pred_keypoints.numpy()[..., 2].astype(np.float64), 0.0, 1.0)
        return kp_scores.mean(axis=1), False
    return np.zeros(len(instances)), False


class PoseDrawer:
    """Draws Instances with Detectron2's Visualizer: boxes labelled with the person's score, Detectron2's
    way for a detector's own output ("person 97%") or as a pose score with a legend saying so ("pose
    73%"; `display_scores`); track ids and colours for video; skeletons."""

    def __init__(self, metadata, confidence_threshold: float, keypoint_threshold: float):
        """
        Args:
            metadata: the dataset's metadata (keypoint names and connection rules).
            confidence_threshold: people whose score (`Instances.scores`, in [0, 1] for every
                method) is below it are not drawn.
            keypoint_threshold: keypoints scoring at most this are left out.
        """
        self.metadata = metadata
        self.confidence_threshold = confidence_threshold
        self.keypoint_threshold = keypoint_threshold

    def labels(self, instances: Instances, track_ids: Optional[Sequence[int]] = None
               ) -> Tuple[np.ndarray, List[str], Optional[str]]:
        """(indices of the people drawn, their box labels, the legend or None)."""
        scores, from_detector = display_scores(instances)
        keep = np.nonzero(scores >= self.confidence_threshold)[0]
        what = "person" if from_detector else "pose"
        labels = [f"{what} {int(round(100 * s))}%" for s in scores[keep]]
        if track_ids is not None:
            # id -1: a person the tracker left untracked (a low-scored or duplicate detection)
            labels = [f"id {int(i)} {label}" if int(i) >= 0 else label
                      for i, label in zip(np.asarray(track_ids)[keep], labels)]
        legend = POSE_SCORE_LEGEND if len(keep) and not from_detector else None
        return keep, labels, legend

    def people_drawn(self, instances: Instances) -> int:
        """How many of the people of `instances` a drawing shows (those scoring at least the threshold)."""
        return len(self.labels(instances)[0])

    def __call__(self, bgr: np.ndarray, instances: Instances, track_ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """The BGR image with the people of `instances` (R people; `track_ids` (R,) label and colour them)."""
        vis = Visualizer(bgr[:, :, ::-1], metadata=self.metadata)
        vis.keypoint_threshold = self.keypoint_threshold  # Visualizer draws keypoints scoring above it
        keep, labels, legend = self.labels(instances, track_ids)
        if len(keep) == 0:
            return vis.output.get_image()[:, :, ::-1]
        boxes = instances.pred_boxes.tensor.numpy()[keep] if instances.has("pred_boxes") else None
        kps = instances.pred_keypoints.numpy()[keep] if instances.has("pred_keypoints") else None
        colors = [track_color(i) for i in np.asarray(track_ids)[keep]] if track_ids is not None else None
        vis.overlay_instances(boxes=boxes, labels=labels, keypoints=kps, assigned_colors=colors)
        if legend is not None:
            vis.draw_text(legend, (4, 4), horizontal_alignment="left", color="w")
        return vis.output.get_image()[:, :, ::-1]


#: the captions of `draw_record`'s two panels
PANEL_CAPTIONS = ("ground truth", "predictions")


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """`rgb` (H, W, 3) under a dark band (H + band, W, 3) holding `text` in white."""
    height = max(20, rgb.shape[0] // 14)
    font_scale = height / 40
    band = np.full((height, rgb.shape[1], 3), 32, np.uint8)
    (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    cv2.putText(band, text, (4, (height + text_h) // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([band, rgb], axis=0)


def draw_record(record: Dict, metadata, predictions: Optional[Dict[int, List[Dict]]] = None,
                scale: float = 1.0) -> np.ndarray:
    """RGB drawing of one dataset record's annotations, side by side with its predictions (COCO
    results grouped by image id, as `load_coco_results` gives them) if given, each panel captioned
    (PANEL_CAPTIONS)."""
    image = utils.read_image(record["file_name"], format="RGB")
    gt = Visualizer(image, metadata=metadata, scale=scale).draw_dataset_dict(record).get_image()
    if predictions is None:
        return gt
    inst = coco_results_to_instances(predictions.get(record["image_id"], []), image.shape[:2])
    pred = Visualizer(image, metadata=metadata, scale=scale).draw_instance_predictions(inst).get_image()
    return np.concatenate([caption(panel, text) for panel, text in zip((gt, pred), PANEL_CAPTIONS)], axis=1)


def visualize_dataset(dataset: str, output_dir: str, num: int = 16, predictions: str = "", score_thresh: float = 0.3,
                      scale: float = 1.0, overwrite: bool = False) -> List[str]:
    """Draws the first `num` images (0 = all) of a registered dataset, with the predictions of a COCO
    keypoint results json (those scoring at least `score_thresh`) beside the ground truth, into
    output_dir/<image name>.jpg; an existing file is refused unless `overwrite`. Returns the paths."""
    records = DatasetCatalog.get(dataset)
    metadata = MetadataCatalog.get(dataset)
    preds = load_coco_results(predictions, score_thresh) if predictions else None
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for record in records[: num or None]:
        out = os.path.join(output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".jpg")
        if os.path.exists(out) and not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        cv2.imwrite(out, draw_record(record, metadata, preds, scale)[:, :, ::-1])
        written.append(out)
    logger.info("wrote %d drawings to %s", len(written), output_dir)
    return written


def register_demo_drawing(head: str) -> Callable[[Callable], Callable]:
    """Decorator: registers `drawing(config_file, dataset, weights, output_dir, num, opts) -> None`
    as what the training demo draws for a top-down model whose MODEL.TOPDOWN.HEAD is `head` (after
    training, from the final weights; it prints what it wrote)."""
    def register(fn: Callable) -> Callable:
        if head in _DEMO_DRAWINGS:
            raise KeyError(f"a demo drawing for {head!r} is already registered")
        _DEMO_DRAWINGS[head] = fn
        return fn
    return register


def demo_drawing(head: str) -> Optional[Callable]:
    """The drawing registered for `head` with `register_demo_drawing`, or None."""
    return _DEMO_DRAWINGS.get(head)
