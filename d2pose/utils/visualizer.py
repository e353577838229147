"""Drawing poses with Detectron2's `Visualizer`: a model's predictions (`PoseDrawer`, with track
ids and colours for video), a dataset's annotations beside predictions (`draw_record`,
`visualize_dataset`), and the registry of the per-method drawings the training demo makes
(`register_demo_drawing`: a method package registers what shows its model's inner workings).
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

__all__ = ["track_color", "PoseDrawer", "draw_record", "visualize_dataset", "register_demo_drawing", "demo_drawing"]

logger = logging.getLogger("d2pose.visualize_data")

#: {MODEL.TOPDOWN.HEAD: drawing(config_file, dataset, weights, output_dir, num, opts)}
_DEMO_DRAWINGS: Dict[str, Callable] = {}


def track_color(track_id: int) -> Tuple[float, float, float]:
    """A stable, distinct RGB colour in [0, 1] per id (golden-ratio hues)."""
    return colorsys.hsv_to_rgb((0.61803398875 * int(track_id)) % 1.0, 0.85, 1.0)


class PoseDrawer:
    """Draws Instances with Detectron2's Visualizer: boxes, labels (score, track id), skeletons."""

    def __init__(self, metadata, confidence_threshold: float, keypoint_threshold: float):
        """
        Args:
            metadata: the dataset's metadata (keypoint names and connection rules).
            confidence_threshold: people scoring below it are not drawn.
            keypoint_threshold: keypoints scoring at most this are left out.
        """
        self.metadata = metadata
        self.confidence_threshold = confidence_threshold
        self.keypoint_threshold = keypoint_threshold

    def __call__(self, bgr: np.ndarray, instances: Instances, track_ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """The BGR image with the people of `instances` (R people; `track_ids` (R,) label and colour them)."""
        vis = Visualizer(bgr[:, :, ::-1], metadata=self.metadata)
        vis.keypoint_threshold = self.keypoint_threshold
        keep = np.nonzero(instances.scores.numpy() >= self.confidence_threshold)[0]
        if len(keep) == 0:
            return vis.output.get_image()[:, :, ::-1]
        scores = instances.scores.numpy()[keep]
        boxes = instances.pred_boxes.tensor.numpy()[keep] if instances.has("pred_boxes") else None
        kps = instances.pred_keypoints.numpy()[keep] if instances.has("pred_keypoints") else None
        if track_ids is not None:
            ids = np.asarray(track_ids)[keep]
            labels = [f"id {int(i)} {s:.2f}" for i, s in zip(ids, scores)]
            colors = [track_color(i) for i in ids]
        else:
            labels = [f"{s:.2f}" for s in scores]
            colors = None
        out = vis.overlay_instances(boxes=boxes, labels=labels, keypoints=kps, assigned_colors=colors)
        return out.get_image()[:, :, ::-1]


def draw_record(record: Dict, metadata, predictions: Optional[Dict[int, List[Dict]]] = None,
                scale: float = 1.0) -> np.ndarray:
    """RGB drawing of one dataset record's annotations, side by side with its predictions (COCO
    results grouped by image id, as `load_coco_results` gives them) if given."""
    image = utils.read_image(record["file_name"], format="RGB")
    gt = Visualizer(image, metadata=metadata, scale=scale).draw_dataset_dict(record).get_image()
    if predictions is None:
        return gt
    inst = coco_results_to_instances(predictions.get(record["image_id"], []), image.shape[:2])
    pred = Visualizer(image, metadata=metadata, scale=scale).draw_instance_predictions(inst).get_image()
    return np.concatenate([gt, pred], axis=1)


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
