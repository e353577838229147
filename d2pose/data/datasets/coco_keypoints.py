"""Loading and registering COCO-format keypoint datasets (COCO, OCHuman, CrowdPose, user sets).

Coordinates follow Detectron2: `load_coco_json` adds 0.5 to every keypoint x and y (COCO stores
integer pixel indices, Detectron2 works with continuous coordinates where pixel i spans [i, i+1)),
and evaluators subtract 0.5 when writing COCO results. See `d2pose.data` for the convention.
"""
import json
import logging
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from detectron2.structures import BoxMode

from ..metadata import KeypointMetadata, get_keypoint_metadata

__all__ = ["register_keypoint_dataset", "load_keypoint_json", "DatasetFileMissing", "has_zero_area", "box_xyxy",
           "EVALUATOR_TYPES", "KEYPOINT_EVALUATOR_TYPES"]

logger = logging.getLogger(__name__)

#: the metadata `evaluator_type`s that d2pose's `KeypointEvaluator` scores (d2pose.evaluation)
KEYPOINT_EVALUATOR_TYPES = ("coco_keypoints", "ochuman", "crowdpose", "mpii")
#: every `evaluator_type` a registered dataset may name (`build_evaluator` knows them): the keypoint
#: ones and Detectron2's "coco"
EVALUATOR_TYPES = frozenset(KEYPOINT_EVALUATOR_TYPES) | {"coco"}


class DatasetFileMissing(FileNotFoundError):
    """A dataset file is missing; the message names the path and the expected layout."""


def check_exists(path: str, dataset_name: str, layout: str = "") -> None:
    if not os.path.exists(path):
        raise DatasetFileMissing(
            f"dataset {dataset_name!r}: {path} does not exist."
            + (f" Expected layout under $DETECTRON2_DATASETS:\n{layout}" if layout else "")
        )


def _ids(anns: List[str], limit: int = 10) -> str:
    return ", ".join(anns[:limit]) + (f", ... ({len(anns)} in all)" if len(anns) > limit else "")


def _check_keypoints(dicts: List[Dict], meta: KeypointMetadata, json_file: str, name: str = "") -> None:
    """Validates the keypoints of every annotation; fixes and warns (once per dataset) where the COCO
    API's reading is clear, raises (naming the file and the annotation ids) where it is not.

    * a keypoint count other than the metadata's: error.
    * a non-finite (NaN / inf) x, y or v: error. pycocotools would count such a person as matched in
      evaluation and the losses would carry the NaN; there is no value to put in its place.
    * a visibility flag outside {0, 1, 2}: warning; read as pycocotools reads it (v > 0 labelled):
      negative flags become 0 (unlabelled), flags above 2 become 2 (visible).
    * a labelled keypoint far outside its image (more than half the image size beyond an edge):
      warning; kept as annotated (evaluation scores it as it is; augmentations mark keypoints that
      fall outside the network input unlabelled).
    * a person with labelled keypoints whose box or area is zero (`has_zero_area`): warning; left out
      of the dicts, so that no training sample uses it (top-down crops, R-CNN boxes and bottom-up
      centres all need an extent), while `KeypointEvaluator` scores it as an ignored region
      (see `d2pose.evaluation.keypoint_evaluator.ignore_zero_area`): OKS divides by the area, so as
      ground truth it could never be matched, and every such person would cost a miss plus a false
      positive for a correct prediction.
    """
    K = meta.num_keypoints
    where = f"{json_file} (dataset {name!r})" if name else json_file
    non_finite, odd_flags, far, zero_area = [], [], [], []
    for record in dicts:
        W, H = record.get("width"), record.get("height")
        kept = []
        for ann in record.get("annotations", []):
            kps = ann.get("keypoints")
            kept.append(ann)
            if kps is None:
                continue
            label = f"{ann.get('id', '?')} (image {record.get('image_id')})"
            if len(kps) != 3 * K:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id', '?')} of image {record.get('image_id')} has "
                    f"{len(kps) // 3} keypoints, but the dataset's metadata {meta.name!r} has {K}"
                )
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in kps):
                non_finite.append(label)
                continue
            flags = kps[2::3]
            if any(v not in (0, 1, 2) for v in flags):
                odd_flags.append(label)
                kps = list(kps)
                kps[2::3] = [0 if v <= 0 else (2 if v > 2 else v) for v in flags]
                ann["keypoints"] = kps
            if any(v > 0 for v in kps[2::3]) and has_zero_area(ann):
                zero_area.append(label)
                kept.pop()
                continue
            if W and H:
                for k in range(K):
                    x, y, v = kps[3 * k: 3 * k + 3]
                    if v > 0 and (x < -0.5 * W or x > 1.5 * W or y < -0.5 * H or y > 1.5 * H):
                        far.append(label)
                        break
        if "annotations" in record:
            record["annotations"] = kept
    if non_finite:
        raise ValueError(f"{where}: {len(non_finite)} annotations have non-finite (NaN / inf) keypoint values: "
                         f"annotation ids {_ids(non_finite)}. Fix or remove them in the json.")
    if odd_flags:
        logger.warning("%s: %d annotations have visibility flags outside {0, 1, 2} (read as pycocotools does: "
                       "v <= 0 unlabelled, v > 2 visible): annotation ids %s", where, len(odd_flags), _ids(odd_flags))
    if far:
        logger.warning("%s: %d annotations have labelled keypoints far outside their image (kept as annotated): "
                       "annotation ids %s", where, len(far), _ids(far))
    if zero_area:
        logger.warning("%s: %d annotations with labelled keypoints have a zero-area box or area: they are left "
                       "out of training, and evaluation scores them as ignored regions (a prediction on them "
                       "is neither a hit nor a false positive, and no miss is counted): annotation ids %s",
                       where, len(zero_area), _ids(zero_area))


def has_zero_area(ann: Dict) -> bool:
    """Whether a COCO annotation's box has no width or height, or its given area is 0 (or negative)."""
    area = ann.get("area")
    if area is not None and area <= 0:
        return True
    if "bbox" not in ann:
        return False
    x0, y0, x1, y1 = box_xyxy(ann)
    return x1 - x0 <= 0 or y1 - y0 <= 0


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
    try:
        dicts = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["num_keypoints", "area", "id"])
    except (KeyError, AssertionError, TypeError) as e:
        problem = find_missing_fields(json_file)
        if problem:
            raise ValueError(problem) from e
        raise
    fill_optional_fields(dicts)
    _check_keypoints(dicts, meta, json_file, name)
    return dicts


REQUIRED_IMAGE_FIELDS = ("id", "file_name")
REQUIRED_ANNOTATION_FIELDS = ("id", "image_id", "category_id")


def find_missing_fields(json_file: str) -> str:
    """A message naming the file, the record and the field when a required COCO field is missing
    ("" when none is): images need id and file_name, annotations id, image_id, category_id, and bbox
    when they have keypoints."""
    with open(json_file) as f:
        data = json.load(f)
    for key in ("images", "annotations"):
        if key not in data:
            return f"{json_file}: the top-level field {key!r} is missing"
    for i, im in enumerate(data["images"]):
        for field in REQUIRED_IMAGE_FIELDS:
            if field not in im:
                return f"{json_file}: image {im.get('id', f'#{i}')} has no {field!r} field"
    for i, ann in enumerate(data["annotations"]):
        fields = REQUIRED_ANNOTATION_FIELDS + (("bbox",) if ann.get("keypoints") is not None else ())
        for field in fields:
            if field not in ann:
                return f"{json_file}: annotation {ann.get('id', f'#{i} (no id)')} has no {field!r} field"
    return ""


def fill_optional_fields(dicts: List[Dict]) -> None:
    """Fills the optional COCO fields the way the COCO API does when they are absent: area from the
    box (w x h, as `COCO.loadRes`), iscrowd 0, num_keypoints from the visibility flags.

    The filled area serves training (e.g. bottom-up targets' small-person rule and offset weights).
    Evaluation does not read these dicts for it: `KeypointEvaluator` decides the OKS scale on the
    json as written, and scores a json without areas with 0.53 x box area (xtcocotools
    use_area=False; see `d2pose.evaluation.keypoint_evaluator.resolve_use_area`)."""
    for record in dicts:
        for ann in record.get("annotations", []):
            if ann.get("area") is None and "bbox" in ann:
                x0, y0, x1, y1 = box_xyxy(ann)
                ann["area"] = float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))
            ann.setdefault("iscrowd", 0)
            kps = ann.get("keypoints")
            if kps is not None and ann.get("num_keypoints") is None:
                ann["num_keypoints"] = int(sum(1 for v in kps[2::3] if v > 0))


def box_xyxy(ann: Dict) -> List[float]:
    """An annotation's box as [x0, y0, x1, y1] (its `bbox_mode`, COCO's XYWH when absent)."""
    return list(BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS))


def register_keypoint_dataset(
    name: str,
    json_file: str,
    image_root: str,
    metadata: Union[str, Mapping, KeypointMetadata] = "coco_person",
    evaluator_type: Optional[str] = None,
    check_files: bool = True,
    layout: str = "",
    prepare: Optional[Callable[[], None]] = None,
    use_area: Optional[bool] = None,
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
        evaluator_type: "coco_keypoints", "crowdpose", "ochuman" or "mpii". Default: "crowdpose" for
            the built-in "crowdpose" metadata (CrowdPose AP with its easy / medium / hard split),
            "coco_keypoints" otherwise.
        check_files: raise now if json_file or image_root is missing (built-in datasets, which
            may never be downloaded, check when loaded instead).
        layout: expected folder layout, quoted in missing-file errors.
        prepare: called before loading (used to generate synthetic data on demand).
        use_area: the OKS scale `KeypointEvaluator` uses (MetadataCatalog field `use_area`): the
            annotated area (True; missing areas filled from the box, w x h) or 0.53 x the box area
            (False, xtcocotools' convention for sets without areas). Default (None): 0.53 x box area
            for "crowdpose" and for jsons whose annotations have no `area` (CrowdPose, AI Challenger),
            the annotated area otherwise (see `d2pose.evaluation.keypoint_evaluator.resolve_use_area`).
            Training is not affected: the loader fills a missing area from the box (w x h) either way.
        extra_metadata: more MetadataCatalog fields (e.g. person_detections).
    """
    meta = get_keypoint_metadata(metadata)
    if evaluator_type is None:
        evaluator_type = "crowdpose" if meta.name == "crowdpose" else "coco_keypoints"
    if use_area is not None:
        if not isinstance(use_area, bool):
            raise TypeError(f"dataset {name!r}: use_area must be True, False or None, got {use_area!r}")
        extra_metadata["use_area"] = use_area

    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(f"dataset {name!r}: evaluator_type {evaluator_type!r} is not one of {sorted(EVALUATOR_TYPES)}")
    # relative paths are resolved now: loading may happen after the working directory changed
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
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
