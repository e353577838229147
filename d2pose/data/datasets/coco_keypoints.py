"""Loading and registering COCO-format keypoint datasets (COCO, OCHuman, CrowdPose, user sets).

Coordinates follow Detectron2: `load_coco_json` adds 0.5 to every keypoint x and y (COCO stores
integer pixel indices, Detectron2 works with continuous coordinates where pixel i spans [i, i+1)),
and evaluators subtract 0.5 when writing COCO results. See `d2pose.data` for the convention.
"""
import logging
import os
from typing import Callable, Dict, List, Mapping, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json

from ..metadata import KeypointMetadata, get_keypoint_metadata

__all__ = ["register_keypoint_dataset", "load_keypoint_json", "DatasetFileMissing"]

logger = logging.getLogger(__name__)


class DatasetFileMissing(FileNotFoundError):
    """A dataset file is missing; the message names the path and the expected layout."""


def check_exists(path: str, dataset_name: str, layout: str = "") -> None:
    if not os.path.exists(path):
        raise DatasetFileMissing(
            f"dataset {dataset_name!r}: {path} does not exist."
            + (f" Expected layout under $DETECTRON2_DATASETS:\n{layout}" if layout else "")
        )


def _check_keypoints(dicts: List[Dict], meta: KeypointMetadata, json_file: str) -> None:
    K = meta.num_keypoints
    for record in dicts:
        for ann in record.get("annotations", []):
            kps = ann.get("keypoints")
            if kps is not None and len(kps) != 3 * K:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id', '?')} of image {record.get('image_id')} has "
                    f"{len(kps) // 3} keypoints, but the dataset's metadata {meta.name!r} has {K}"
                )


def load_keypoint_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    metadata: Union[str, Mapping, KeypointMetadata] = "coco_person",
    layout: str = "",
    prepare: Optional[Callable[[], None]] = None,
) -> List[Dict]:
    """Detectron2 dataset dicts of a COCO-format person keypoint json, checked against the metadata.

    Args:
        json_file, image_root: the annotation file and the image folder.
        dataset_name: name used in messages and for the catalog's class mapping.
        metadata: keypoint metadata the annotations must match.
        layout: expected folder layout, quoted when a file is missing.
        prepare: called first (e.g. to generate a synthetic set on demand).
    """
    if prepare is not None:
        prepare()
    name = dataset_name or json_file
    check_exists(json_file, name, layout)
    check_exists(image_root, name, layout)
    meta = get_keypoint_metadata(metadata)
    dicts = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["num_keypoints", "area", "id"])
    _check_keypoints(dicts, meta, json_file)
    return dicts


def register_keypoint_dataset(
    name: str,
    json_file: str,
    image_root: str,
    metadata: Union[str, Mapping, KeypointMetadata] = "coco_person",
    evaluator_type: str = "coco_keypoints",
    check_files: bool = True,
    layout: str = "",
    prepare: Optional[Callable[[], None]] = None,
    **extra_metadata,
) -> None:
    """Registers a COCO-format person keypoint dataset into Detectron2's catalogs.

    Args:
        name: dataset name for `DATASETS.TRAIN` / `DATASETS.TEST`.
        json_file: COCO person_keypoints json.
        image_root: folder of the images.
        metadata: a built-in keypoint set name ("coco_person", "crowdpose", "mpii"), or a dict with
            keypoint_names, flip_map, sigmas (and optionally skeleton, upper_body) for any keypoint
            count. Validated now: mismatched lengths raise here, not mid-training.
        evaluator_type: "coco_keypoints", "crowdpose", "ochuman" or "mpii".
        check_files: raise now if json_file or image_root is missing (built-in datasets, which
            may never be downloaded, check when loaded instead).
        layout: expected folder layout, quoted in missing-file errors.
        prepare: called before loading (used to generate synthetic data on demand).
        extra_metadata: more MetadataCatalog fields (e.g. person_detections).
    """
    meta = get_keypoint_metadata(metadata)
    if check_files:
        check_exists(json_file, name, layout)
        check_exists(image_root, name, layout)
    DatasetCatalog.register(
        name, lambda: load_keypoint_json(json_file, image_root, name, meta, layout=layout, prepare=prepare)
    )
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type=evaluator_type,
        thing_classes=["person"],
        **meta.as_catalog_dict(),
        **extra_metadata,
    )
