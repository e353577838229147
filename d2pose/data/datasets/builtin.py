"""Registration of d2pose's built-in keypoint datasets under `$DETECTRON2_DATASETS`.

Layout (Detectron2's standard one, with MMPose's names for the person detections):

    coco/annotations/person_keypoints_{train,val}2017.json, image_info_test-dev2017.json
    coco/{train,val,test}2017/
    coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json
    ochuman/annotations/ochuman_coco_format_{val,test}_range_0.00_1.00.json
    ochuman/images/
    crowdpose/annotations/crowdpose_{train,val,trainval,test}.json
    crowdpose/images/
    mpii/annotations/mpii_{train,val}.json      (MMPose layout)
    mpii/images/

The synthetic benchmark (`synthetic_pose_train`, `synthetic_pose_val`, `synthetic_pose_val_mini`) is
generated on first use under `$D2POSE_SYNTHETIC_ROOT` (default `$DETECTRON2_DATASETS/synthetic_pose`).
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..metadata import get_keypoint_metadata
from ..synthetic import SYNTHETIC_SPLITS, ensure_synthetic_split, synthetic_split_paths
from .coco_keypoints import check_exists, register_keypoint_dataset
from .mpii import load_mpii_json

__all__ = ["register_all_keypoint_datasets", "register_mpii_dataset", "datasets_root", "LAYOUT"]

LAYOUT = __doc__[__doc__.index("    coco/"):__doc__.index("\nThe synthetic")]

_COCO = {
    "coco_2017_train_pose": ("coco/train2017", "coco/annotations/person_keypoints_train2017.json"),
    "coco_2017_val_pose": ("coco/val2017", "coco/annotations/person_keypoints_val2017.json"),
    "coco_2017_test_dev_pose": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
}
_COCO_DETECTIONS = "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
_OCHUMAN = {
    f"ochuman_{split}": ("ochuman/images", f"ochuman/annotations/ochuman_coco_format_{split}_range_0.00_1.00.json")
    for split in ("val", "test")
}
_CROWDPOSE = {
    f"crowdpose_{split}": ("crowdpose/images", f"crowdpose/annotations/crowdpose_{split}.json")
    for split in ("train", "val", "trainval", "test")
}
_MPII = {f"mpii_{split}": ("mpii/images", f"mpii/annotations/mpii_{split}.json") for split in ("train", "val")}


def datasets_root() -> str:
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_mpii_dataset(name: str, json_file: str, image_root: str, check_files: bool = True) -> None:
    """Registers an MMPose-style MPII json (16 keypoints, PCKh evaluation)."""
    meta = get_keypoint_metadata("mpii")
    if check_files:
        check_exists(json_file, name, LAYOUT)
        check_exists(image_root, name, LAYOUT)
    DatasetCatalog.register(name, lambda: load_mpii_json(json_file, image_root, name, meta.num_keypoints))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="mpii", thing_classes=["person"],
        **meta.as_catalog_dict(),
    )


def _register_synthetic() -> None:
    for name in SYNTHETIC_SPLITS:
        json_file, image_root = synthetic_split_paths(name)
        register_keypoint_dataset(
            name,
            json_file,
            image_root,
            metadata="coco_person",
            check_files=False,
            prepare=lambda name=name: ensure_synthetic_split(name),
            synthetic=True,
        )


def register_all_keypoint_datasets(root: str = None) -> None:
    """Registers every built-in dataset (idempotent; files are checked when a dataset is loaded)."""
    root = root or datasets_root()
    if "coco_2017_val_pose" in DatasetCatalog.list():
        return
    for name, (images, ann) in _COCO.items():
        extra = {"person_detections": os.path.join(root, _COCO_DETECTIONS)} if "val" in name else {}
        register_keypoint_dataset(name, os.path.join(root, ann), os.path.join(root, images), "coco_person",
                                  check_files=False, layout=LAYOUT, **extra)
    for name, (images, ann) in _OCHUMAN.items():
        register_keypoint_dataset(name, os.path.join(root, ann), os.path.join(root, images), "coco_person",
                                  evaluator_type="ochuman", check_files=False, layout=LAYOUT)
    for name, (images, ann) in _CROWDPOSE.items():
        register_keypoint_dataset(name, os.path.join(root, ann), os.path.join(root, images), "crowdpose",
                                  evaluator_type="crowdpose", check_files=False, layout=LAYOUT)
    for name, (images, ann) in _MPII.items():
        register_mpii_dataset(name, os.path.join(root, ann), os.path.join(root, images), check_files=False)
    _register_synthetic()
