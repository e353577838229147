"""The synthetic keypoint dataset on disk: ``generate_synthetic_pose`` renders a COCO person_keypoints
json and its JPEG images (in worker processes if asked, identical for any number of workers, cached by
generation parameters), the named splits (``SYNTHETIC_SPLITS``) under ``synthetic_root()``, and
``render_sample_grid``, a PNG grid of the annotations drawn over the first images."""
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ...utils.io import atomic_write
from ..metadata import COCO_PERSON
from .people import KEYPOINT_NAMES
from .samples import render_sample

__all__ = [
    "SKELETON",
    "SYNTHETIC_SPLITS",
    "VERSION",
    "SyntheticSplit",
    "ensure_synthetic_split",
    "generate_synthetic_pose",
    "render_sample_grid",
    "synthetic_root",
    "synthetic_split_paths",
]

logger = logging.getLogger(__name__)

VERSION = "synthetic_pose-1.0"  # bump on any change of the rendered output: it invalidates caches
# the COCO person skeleton as 1-based keypoint index pairs (the COCO json "skeleton" field)
SKELETON = [[KEYPOINT_NAMES.index(a) + 1, KEYPOINT_NAMES.index(b) + 1] for a, b, _ in COCO_PERSON.skeleton]


@dataclass(frozen=True)
class SyntheticSplit:
    """Generation parameters of a named split: image count and seed (images are 384x384)."""

    num_images: int
    seed: int


#: Named splits; ``ensure_synthetic_split(name)`` generates them under ``synthetic_root()/name``.
SYNTHETIC_SPLITS: Dict[str, SyntheticSplit] = {
    "synthetic_pose_train": SyntheticSplit(num_images=4000, seed=1),
    "synthetic_pose_val": SyntheticSplit(num_images=500, seed=2),
    "synthetic_pose_val_mini": SyntheticSplit(num_images=64, seed=3),
}


def _write_atomic(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), fsync=False)  # regenerable files: no fsync, as before


def _generate_one(args: Tuple[str, int, int, Tuple[int, int]]) -> Tuple[dict, List[dict]]:
    """Renders and writes one image; returns its COCO image entry and annotations."""
    image_dir, seed, index, image_size = args
    jpeg, annotations = render_sample(seed, index, image_size)
    file_name = f"{index:06d}.jpg"
    _write_atomic(os.path.join(image_dir, file_name), jpeg)
    entry = {"id": index + 1, "file_name": file_name, "height": image_size[0], "width": image_size[1]}
    return entry, annotations


def _categories() -> List[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": [list(pair) for pair in SKELETON]}]


def generate_synthetic_pose(
    output_dir: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = (384, 384),
    num_workers: int = 0,
    progress: bool = True,
) -> str:
    """Generates (or reuses) a synthetic dataset: ``output_dir/images/*.jpg`` + ``annotations.json``.

    Args:
        output_dir: directory of the dataset.
        num_images: number of images.
        seed: dataset seed; image ``i`` depends only on (seed, i), so output is identical for
            any ``num_workers``.
        image_size: (height, width) of every image.
        num_workers: worker processes (0: render in this process).
        progress: show a tqdm progress bar.

    Returns:
        Path of the COCO person_keypoints json; it is written atomically and last, and kept when
        it already exists with the same generation parameters (json["info"]["generation"]).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    image_size = (int(image_size[0]), int(image_size[1]))
    params = {"version": VERSION, "num_images": int(num_images), "seed": int(seed), "image_size": list(image_size)}
    json_path = os.path.join(output_dir, "annotations.json")
    image_dir = os.path.join(output_dir, "images")
    if os.path.isfile(json_path):
        try:
            with open(json_path) as f:
                cached = json.load(f).get("info", {}).get("generation")
        except (OSError, ValueError):
            cached = None
        if cached == params and os.path.isfile(os.path.join(image_dir, f"{num_images - 1:06d}.jpg")):
            logger.info("Using cached synthetic pose dataset at %s", json_path)
            return json_path
    os.makedirs(image_dir, exist_ok=True)
    logger.info("Generating %d synthetic pose images (seed %d) into %s", num_images, seed, output_dir)
    tasks = [(image_dir, int(seed), i, image_size) for i in range(num_images)]
    images, annotations = [], []
    bar = tqdm(total=num_images, desc="synthetic pose", disable=not progress)
    pool = multiprocessing.Pool(num_workers) if num_workers > 0 else None
    try:
        results = pool.imap(_generate_one, tasks, chunksize=8) if pool else map(_generate_one, tasks)
        for entry, anns in results:
            images.append(entry)
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], **ann})
            bar.update(1)
    finally:
        bar.close()
        if pool:
            pool.close()
            pool.join()
    dataset = {
        "info": {"description": "d2pose procedurally rendered synthetic multi-person keypoints",
                 "version": VERSION, "generation": params},
        "images": images, "annotations": annotations, "categories": _categories(),
    }  # fmt: skip
    _write_atomic(json_path, json.dumps(dataset).encode("utf-8"))
    logger.info("Wrote %d images, %d people to %s", len(images), len(annotations), json_path)
    return json_path


def synthetic_root() -> str:
    """Root of the synthetic splits: $D2POSE_SYNTHETIC_ROOT, else $DETECTRON2_DATASETS/synthetic_pose."""
    if os.environ.get("D2POSE_SYNTHETIC_ROOT"):
        return os.environ["D2POSE_SYNTHETIC_ROOT"]
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic_pose")


def ensure_synthetic_split(name: str, root: Optional[str] = None) -> Tuple[str, str]:
    """Generates the named split of ``SYNTHETIC_SPLITS`` if needed; returns (json_file, image_root)."""
    if name not in SYNTHETIC_SPLITS:
        raise KeyError(f"unknown synthetic split {name!r}; known: {sorted(SYNTHETIC_SPLITS)}")
    split = SYNTHETIC_SPLITS[name]
    json_file, image_root = synthetic_split_paths(name, root)
    generate_synthetic_pose(os.path.dirname(json_file), split.num_images, split.seed)
    return json_file, image_root


def synthetic_split_paths(name: str, root: Optional[str] = None) -> Tuple[str, str]:
    """(json_file, image_root) of a named split, generated or not."""
    output_dir = os.path.join(root or synthetic_root(), name)
    return os.path.join(output_dir, "annotations.json"), os.path.join(output_dir, "images")


_LIMB_COLORS = [tuple(int(c) for c in cv2.cvtColor(np.uint8([[[h, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])
                for h in np.linspace(0, 179, len(SKELETON), endpoint=False)]


def render_sample_grid(json_file: str, image_root: str, out_path: str, num: int = 16, cols: int = 4) -> str:
    """Draws the annotations of the first ``num`` images into a PNG grid and returns its path.

    Skeleton limbs have a fixed colour per keypoint pair; keypoints are green discs when visible
    (v=2) and red rings when occluded (v=1); boxes are grey, with the facing written above.
    """
    with open(json_file) as f:
        data = json.load(f)
    images = sorted(data["images"], key=lambda im: im["id"])[:num]
    by_image: Dict[int, List[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    tiles = []
    for im in images:
        tile = cv2.imread(os.path.join(image_root, im["file_name"]))
        for ann in by_image.get(im["id"], []):
            kps = np.array(ann["keypoints"], float).reshape(17, 3)
            x, y, bw, bh = ann["bbox"]
            cv2.rectangle(tile, (int(x), int(y)), (int(x + bw), int(y + bh)), (160, 160, 160), 1)
            cv2.putText(tile, ann.get("facing", ""), (int(x), max(int(y) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (255, 255, 255), 1, cv2.LINE_AA)
            for (a, b), color in zip(SKELETON, _LIMB_COLORS):
                if kps[a - 1, 2] > 0 and kps[b - 1, 2] > 0:
                    cv2.line(tile, tuple(int(v) for v in np.round(kps[a - 1, :2] * 16)),
                             tuple(int(v) for v in np.round(kps[b - 1, :2] * 16)), color, 1, cv2.LINE_AA, 4)
            for x, y, v in kps:
                centre = (int(round(x * 16)), int(round(y * 16)))
                if v == 2:
                    cv2.circle(tile, centre, 40, (0, 255, 0), -1, cv2.LINE_AA, 4)
                elif v == 1:
                    cv2.circle(tile, centre, 40, (0, 0, 255), 1, cv2.LINE_AA, 4)
        tiles.append(tile)
    if not tiles:
        raise ValueError(f"no images in {json_file}")
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = cv2.resize(tile, (tw, th))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    cv2.imwrite(out_path, grid)
    return out_path
