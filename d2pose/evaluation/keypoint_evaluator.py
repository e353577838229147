"""Keypoint evaluation for Detectron2: COCO / OCHuman OKS AP (pycocotools), CrowdPose AP with its
easy / medium / hard split (xtcocotools `keypoints_crowd`, Li et al., CVPR 2019) and MPII PCKh
(Andriluka et al., CVPR 2014; reported as MMPose does).

`KeypointEvaluator` is a Detectron2 `DatasetEvaluator`: it turns model outputs (`Instances` with
`pred_keypoints` in Detectron2's continuous coordinates) into COCO keypoint results (pixel indices:
x - 0.5, y - 0.5), writes them to `keypoints_results.json`, and scores them with the protocol named by
the dataset's `evaluator_type`. The scoring functions work on results alone, so results files can be
evaluated without images or a model: `evaluate_results_json` (OKS AP) and `evaluate_pckh` (PCKh).

OKS scale (`use_area`): COCO and OCHuman scale each person's OKS by its annotated `area` (segment
area). Sets published without areas (CrowdPose, AI Challenger) are scored with xtcocotools'
`use_area=False`: the scale is 0.53 x the box area (w x h), as their published numbers are. So, unless
`use_area` is given (to `KeypointEvaluator`, to `evaluate_results_json`, or as the dataset's metadata
field at registration: `register_keypoint_dataset(..., use_area=...)`), the scale is 0.53 x box area for
"crowdpose" and for any ground truth whose annotations carry no `area` (warned once per json), and
the annotated area otherwise. The loader's area filled from the box (w x h, for training) plays no
part in that choice: it is made on the ground-truth json as written.
"""
import contextlib
import copy
import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from scipy.optimize import linear_sum_assignment

from ..data.datasets.coco_keypoints import KEYPOINT_EVALUATOR_TYPES, has_zero_area
from ..data.metadata import get_keypoint_metadata

__all__ = [
    "KeypointEvaluator",
    "ignore_zero_area",
    "evaluate_results_json",
    "evaluate_pckh",
    "resolve_use_area",
    "instances_to_keypoint_results",
    "COCO_KEYPOINT_METRICS",
    "CROWDPOSE_METRICS",
    "MPII_JOINT_GROUPS",
]

logger = logging.getLogger(__name__)

# order of pycocotools' keypoint `stats`
COCO_KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# order of xtcocotools' `keypoints_crowd` `stats` (AP of the easy / medium / hard crowdIndex splits last)
CROWDPOSE_METRICS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")
# MPII table columns (MMPose / HRNet): joint indices averaged per group; "Head" is head_top only
MPII_JOINT_GROUPS: "OrderedDict[str, tuple]" = OrderedDict(
    [("Head", (9,)), ("Shoulder", (12, 13)), ("Elbow", (11, 14)), ("Wrist", (10, 15)), ("Hip", (2, 3)),
     ("Knee", (1, 4)), ("Ankle", (0, 5))]
)
# joints left out of MPII's mean PCKh: pelvis and thorax
MPII_MEAN_EXCLUDED = (6, 7)
_DEFAULT_SIGMAS = {"coco_keypoints": "coco_person", "ochuman": "coco_person", "crowdpose": "crowdpose", "mpii": "mpii"}
# ground-truth jsons already warned about (missing areas): the warning is given once per json and process
_WARNED_NO_AREA = set()


# ----------------------------------------------------------------------------- predictions -> results
def instances_to_keypoint_results(
    instances: Instances, image_id: int, category_ids: Optional[Mapping[int, int]] = None
) -> List[Dict]:
    """COCO keypoint results of one image's predicted `Instances`.

    Keypoints go from Detectron2's continuous coordinates to COCO's pixel indices (x - 0.5, y - 0.5).
    Only `pred_keypoints`, `scores` (default: mean keypoint score) and `pred_classes` (default: class 0)
    are read; other fields (e.g. `pred_keypoint_sigmas`, `pred_boxes`) stay out of the results, so that
    pycocotools derives each result's area from its keypoints, as in MMPose's result files.

    Args:
        instances: predictions with `pred_keypoints` (R, K, 3: x, y, score).
        image_id: the dataset's image id.
        category_ids: contiguous class -> dataset category id; missing classes map to 1.

    Returns:
        R dicts with image_id, category_id, keypoints (3K floats) and score.
    """
    if len(instances) == 0:
        return []
    if not instances.has("pred_keypoints"):
        raise ValueError(f"KeypointEvaluator: the instances of image {image_id} have no pred_keypoints")
    kpts = instances.pred_keypoints.detach().cpu().double().numpy().copy()
    kpts[..., :2] -= 0.5
    if instances.has("scores"):
        scores = instances.scores.detach().cpu().double().numpy()
    else:
        scores = kpts[..., 2].mean(axis=1)
    if instances.has("pred_classes"):
        classes = instances.pred_classes.detach().cpu().numpy().astype(int)
    else:
        classes = np.zeros(len(instances), dtype=int)
    category_ids = category_ids or {}
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids.get(int(c), 1)),
            "keypoints": k.reshape(-1).tolist(),
            "score": float(s),
        }
        for k, s, c in zip(kpts, scores, classes)
    ]


def _load_results(results: Union[str, Sequence[Dict]]) -> List[Dict]:
    if isinstance(results, (str, os.PathLike)):
        with PathManager.open(os.fspath(results)) as f:
            results = json.load(f)
    return copy.deepcopy(list(results))


def _nan_metrics(names: Iterable[str]) -> "OrderedDict[str, float]":
    return OrderedDict((n, float("nan")) for n in names)


def _percent(values: Sequence[float], names: Sequence[str]) -> "OrderedDict[str, float]":
    """COCO stats (fractions, -1 when undefined) on Detectron2's 0-100 scale (NaN when undefined)."""
    return OrderedDict((n, float(v) * 100 if v >= 0 else float("nan")) for n, v in zip(names, values))


# ----------------------------------------------------------------------------- OKS AP
def _check_keypoint_count(results: List[Dict], num_keypoints: int) -> None:
    for r in results:
        if len(r["keypoints"]) != 3 * num_keypoints:
            raise ValueError(
                f"a result of image {r['image_id']} has {len(r['keypoints']) // 3} keypoints, but the "
                f"dataset has {num_keypoints} OKS sigmas"
            )


def _crowd_stats_without_split(coco_eval) -> List[float]:
    """AP, AP50, AP75, AR, AR50, AR75 from an accumulated xtcocotools eval (no crowdIndex split)."""
    params = coco_eval.params
    iou_thrs = params.iouThrs
    area, max_dets = params.areaRngLbl.index("all"), params.maxDets.index(20)

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    # precision: (T, R, K, A, M), recall: (T, K, A, M); area "all", 20 detections as xtcocotools
    precision = coco_eval.eval["precision"][..., area, max_dets]
    recall = coco_eval.eval["recall"][..., area, max_dets]
    out = []
    for array in (precision, recall):
        out.append(mean(array))
        for thr in (0.5, 0.75):
            out.append(mean(array[np.isclose(iou_thrs, thr)]))
    return out + [-1.0, -1.0, -1.0]


def _annotation_ids(anns: List[Dict], limit: int = 10) -> str:
    ids = [str(a.get("id", f"#{i}")) for i, a in enumerate(anns)]
    return ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def resolve_use_area(gt_json: str, annotations: Sequence[Dict], evaluator_type: str,
                     use_area: Optional[bool] = None) -> bool:
    """Whether OKS is scaled by the annotated `area` (True) or by 0.53 x the box area (False, xtcocotools'
    `use_area=False`, the convention of sets published without areas: CrowdPose, AI Challenger).

    An explicit `use_area` wins. Otherwise: False when no annotation of the ground truth has an
    `area` (a warning, once per json, names the file, the convention and how to override it, for
    "crowdpose" too); False for "crowdpose" (its protocol); True otherwise.

    Args:
        gt_json: the ground-truth json (named in messages).
        annotations: its "annotations", as written (not the loader's dicts, whose missing areas are
            filled from the box).
        evaluator_type: the protocol.
        use_area: the caller's choice (None: decide as above).
    """
    if use_area is not None:
        if not isinstance(use_area, (bool, np.bool_)):
            raise TypeError(f"use_area must be True, False or None, got {use_area!r} ({type(use_area).__name__})")
        return bool(use_area)
    if annotations and all(a.get("area") is None for a in annotations):
        if gt_json not in _WARNED_NO_AREA:
            _WARNED_NO_AREA.add(gt_json)
            logger.warning(
                "%s: the annotations have no 'area'; OKS is scaled by 0.53 x the box area (w x h), the convention "
                "sets without areas (CrowdPose, AI Challenger) are published with (xtcocotools use_area=False). "
                "To scale by the box area w x h instead (the loader's area), pass use_area=True to "
                "KeypointEvaluator or register the dataset with register_keypoint_dataset(..., use_area=True); "
                "use_area=False silences this warning.",
                gt_json,
            )
        return False
    return evaluator_type != "crowdpose"  # its protocol: 0.53 x box area, areas or not


def _check_ground_truth(gt_json: str, annotations: Sequence[Dict], use_area: bool, areas_filled: bool = False) -> None:
    """Clear errors for a ground truth COCOeval cannot score (it would fail with a bare KeyError): a
    person without a box (with use_area False, any annotation without one: the box gives the OKS
    scale), or, with use_area True, an annotation without an area (unless `areas_filled`: the
    evaluator fills them from the box)."""
    no_box = [a for a in annotations if a.get("bbox") is None and (a.get("keypoints") is not None or not use_area)]
    if no_box:
        raise ValueError(f"{gt_json}: {len(no_box)} annotations have no 'bbox', which COCOeval needs"
                         f"{'' if use_area else ' (OKS scale: 0.53 x box area)'}: annotation ids "
                         f"{_annotation_ids(no_box)}")
    if use_area and not areas_filled:
        no_area = [a for a in annotations if a.get("area") is None]
        if no_area:
            raise ValueError(
                f"{gt_json}: use_area=True, but {len(no_area)} of {len(annotations)} annotations have no 'area' "
                f"(annotation ids {_annotation_ids(no_area)}). Pass use_area=False (OKS scaled by 0.53 x box area) "
                "or None (chosen from the json), or score through KeypointEvaluator, which fills a missing area "
                "from the box (w x h)."
            )


def _run_cocoeval(gt_json: str, results: List[Dict], evaluator_type: str, sigmas: np.ndarray, use_area: bool,
                  image_ids: Optional[Sequence[int]] = None):
    """Runs COCOeval (on `image_ids` only when given) and returns (stats, printed summary)."""
    crowd = evaluator_type == "crowdpose"
    # imported here, not for a cycle: xtcocotools is optional (not in requirements.txt; only CrowdPose and
    # use_area=False need it), and the two packages define the same names
    if crowd or not use_area:  # xtcocotools: keypoints_crowd, and OKS with box areas when use_area=False
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_gt = COCO(gt_json)
        coco_dt = coco_gt.loadRes(results)
        if crowd or not use_area:
            coco_eval = COCOeval(coco_gt, coco_dt, "keypoints_crowd" if crowd else "keypoints", sigmas, use_area=use_area)
        else:
            coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
            coco_eval.params.kpt_oks_sigmas = sigmas
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(set(image_ids))
        coco_eval.evaluate()
        coco_eval.accumulate()
        if crowd and not all("crowdIndex" in im for im in coco_gt.dataset["images"]):
            logger.warning("%s: images have no crowdIndex; AP(E), AP(M), AP(H) are not computed", gt_json)
            stats = _crowd_stats_without_split(coco_eval)
        else:
            coco_eval.summarize()
            stats = list(coco_eval.stats)
    return stats, out.getvalue()


def evaluate_results_json(
    gt_json: str,
    results: Union[str, Sequence[Dict]],
    evaluator_type: str = "coco_keypoints",
    sigmas: Optional[Sequence[float]] = None,
    use_area: Optional[bool] = None,
    image_ids: Optional[Sequence[int]] = None,
) -> "OrderedDict[str, float]":
    """OKS AP of COCO-format keypoint results against a COCO-format ground-truth json.

    "coco_keypoints" and "ochuman" use pycocotools' keypoint COCOeval (xtcocotools' when use_area is
    False, with 0.53 x box area as the OKS scale); "crowdpose" uses xtcocotools' `keypoints_crowd`,
    which also reports AP on the easy / medium / hard crowdIndex splits. Ground truth people that
    COCOeval ignores (crowd regions, no labelled keypoint) neither count as misses nor as matches.

    Args:
        gt_json: ground-truth json path.
        results: COCO keypoint results (pixel-index coordinates), or the path of a json holding them.
        evaluator_type: "coco_keypoints", "ochuman" or "crowdpose".
        sigmas: K OKS sigmas (default: those of the evaluator type's built-in keypoint set).
        use_area: scale OKS by the annotated area (True) or by 0.53 x the box area (False, xtcocotools'
            convention for sets without areas). Default (None): False for "crowdpose" and for a ground
            truth whose annotations have no `area` (warned once per json), True otherwise; see
            `resolve_use_area`. True on annotations without an area is an error.
        image_ids: score these images only (default: every image of the ground truth).

    Returns:
        `COCO_KEYPOINT_METRICS` or `CROWDPOSE_METRICS` on a 0-100 scale (NaN when undefined or when
        there are no results).
    """
    if evaluator_type not in ("coco_keypoints", "ochuman", "crowdpose"):
        raise ValueError(f"evaluate_results_json: evaluator_type {evaluator_type!r} is not an OKS AP protocol")
    names = CROWDPOSE_METRICS if evaluator_type == "crowdpose" else COCO_KEYPOINT_METRICS
    if sigmas is None:
        sigmas = get_keypoint_metadata(_DEFAULT_SIGMAS[evaluator_type]).sigmas
    sigmas = np.asarray(sigmas, dtype=np.float64)
    local_gt = PathManager.get_local_path(gt_json)
    with open(local_gt) as f:
        annotations = json.load(f).get("annotations", [])
    use_area = resolve_use_area(gt_json, annotations, evaluator_type, use_area)
    _check_ground_truth(gt_json, annotations, use_area)
    results = _load_results(results)
    if not results:
        logger.warning("No keypoint predictions to evaluate against %s", gt_json)
        return _nan_metrics(names)
    _check_keypoint_count(results, len(sigmas))
    stats, printed = _run_cocoeval(local_gt, results, evaluator_type, sigmas, use_area, image_ids)
    logger.info("COCOeval (%s) output:\n%s", evaluator_type, printed.rstrip())
    return _percent(stats, names)


# ----------------------------------------------------------------------------- PCKh
def _zero_area_person(ann: Dict) -> bool:
    kps = ann.get("keypoints")
    if not kps or not any(v > 0 for v in kps[2::3]) or ann.get("iscrowd", 0):
        return False
    return has_zero_area(ann)  # the loader's rule


def ignore_zero_area(anns: List[Dict]) -> List:
    """Makes every person with labelled keypoints and a zero-area box or area an ignored region, in
    place; returns their annotation ids.

    COCOeval divides the OKS by the ground truth's area (xtcocotools without areas: by 0.53 x the
    box's), so such a person can never be matched: each would count as a miss, and a correct
    prediction on it as a false positive. The loader leaves these people out of training
    (`d2pose.data.datasets.coco_keypoints`); here they become what COCO calls a crowd region
    (iscrowd 1: neither a miss nor, for the prediction that matches it, a hit or a false positive),
    with box and area taken from the extent of the labelled keypoints (at least 1 px a side) so that
    a prediction on the person can match it.
    """
    ids = []
    for a in anns:
        if not _zero_area_person(a):
            continue
        kps = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        pts = kps[kps[:, 2] > 0, :2]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        a["bbox"] = [float(x0), float(y0), float(w), float(h)]
        a["area"] = float(w * h)
        a["iscrowd"] = 1
        ids.append(a.get("id"))
    return ids


def _ground_truth_people(dataset_dicts: Iterable[Dict]) -> Dict[int, List[Dict]]:
    """image_id -> people with keypoints (K, 3) in continuous coordinates and head_size."""
    people = defaultdict(list)
    for record in dataset_dicts:
        for ann in record.get("annotations", []):
            if "keypoints" not in ann:
                continue
            people[record["image_id"]].append(
                {"keypoints": np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3),
                 "head_size": float(ann.get("head_size", 0.0))}
            )
    return people


def _normalized_errors(gts: List[Dict], preds: np.ndarray) -> tuple:
    """(G, P, K) head-normalised distances and (G, K) validity of the GT joints."""
    gt_xy = np.stack([g["keypoints"][:, :2] for g in gts])
    head = np.array([g["head_size"] for g in gts])
    valid = (np.stack([g["keypoints"][:, 2] for g in gts]) > 0) & (head[:, None] > 0)
    dist = np.linalg.norm(preds[None, :, :, :2] - gt_xy[:, None], axis=-1)
    return dist / np.where(head > 0, head, 1.0)[:, None, None], valid


def _match_image(gts: List[Dict], preds: np.ndarray) -> np.ndarray:
    """(G, K) normalised errors of each GT person's matched prediction (inf when unmatched).

    Matching rule: one-to-one assignment (Hungarian) minimising the mean over the GT's valid joints
    of min(error, 1), i.e. the predictions closest to each person in PCKh units; extra predictions
    are ignored (PCKh has no false positives), GT people left without a prediction miss every joint.
    """
    num_joints = gts[0]["keypoints"].shape[0]
    errors = np.full((len(gts), num_joints), np.inf)
    if preds.shape[0] == 0:
        return errors
    norm, valid = _normalized_errors(gts, preds)
    clipped = np.minimum(norm, 1.0) * valid[:, None, :]
    cost = clipped.sum(-1) / np.maximum(valid.sum(-1), 1)[:, None]
    rows, cols = linear_sum_assignment(cost)
    errors[rows] = norm[rows, cols]
    return errors


def _pck_per_joint(errors: np.ndarray, valid: np.ndarray, thresh: float) -> np.ndarray:
    """(K,) percentage of valid joints within `thresh` (NaN for joints never valid)."""
    count = valid.sum(0)
    hits = ((errors <= thresh) & valid).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, 100.0 * hits / np.maximum(count, 1), np.nan)


def _pck_mean(errors: np.ndarray, valid: np.ndarray, thresh: float, joints: np.ndarray) -> float:
    """Joint-count-weighted mean PCKh over `joints` (MMPose's `jnt_ratio` weighting)."""
    count = valid[:, joints].sum()
    if count == 0:
        return float("nan")
    return float(100.0 * ((errors[:, joints] <= thresh) & valid[:, joints]).sum() / count)


def evaluate_pckh(
    dataset_dicts: Iterable[Dict],
    results: Union[str, Sequence[Dict]],
    auc_steps: int = 20,
    excluded_joints: Sequence[int] = MPII_MEAN_EXCLUDED,
) -> "OrderedDict[str, float]":
    """MPII PCKh of COCO-format keypoint results against d2pose's MPII dataset dicts.

    A joint is correct when its distance to the ground truth is at most `t` x the person's head size
    (`head_size`, 0.6 x head-box diagonal). Ground-truth joints that are not visible, or of people
    whose head size is 0, are ignored. Predictions are matched to ground-truth people per image as in
    `_match_image` (one-to-one, closest in PCKh units).

    Args:
        dataset_dicts: d2pose MPII dicts: one annotation per person with `keypoints` (continuous
            coordinates, v > 0 for labelled joints) and `head_size`.
        results: COCO keypoint results (pixel-index coordinates) or their json path.
        auc_steps: thresholds of the AUC, 0.5 * i / auc_steps for i < auc_steps (MMPose's
            `keypoint_auc` left Riemann sum, on [0, 0.5]).
        excluded_joints: joints left out of the means (pelvis and thorax, as MMPose and HRNet report).

    Returns:
        PCKh@0.5 and PCKh@0.1 (joint-count-weighted means over the joints not excluded), AUC, and the
        per-group PCKh@0.5 of `MPII_JOINT_GROUPS` (mean of left and right), all 0-100.
    """
    gt_people = _ground_truth_people(dataset_dicts)
    preds = defaultdict(list)
    for r in _load_results(results):
        kpts = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3).copy()
        kpts[:, :2] += 0.5  # back to the dataset dicts' continuous coordinates
        preds[r["image_id"]].append(kpts)
    all_errors, all_valid = [], []
    for image_id, gts in gt_people.items():
        p = np.stack(preds[image_id]) if preds.get(image_id) else np.zeros((0,) + gts[0]["keypoints"].shape)
        all_errors.append(_match_image(gts, p))
        all_valid.append(np.stack([(g["keypoints"][:, 2] > 0) & (g["head_size"] > 0) for g in gts]))
    names = ["PCKh@0.5", "PCKh@0.1", "AUC"] + list(MPII_JOINT_GROUPS)
    if not all_errors:
        return _nan_metrics(names)
    errors, valid = np.concatenate(all_errors), np.concatenate(all_valid)
    num_joints = errors.shape[1]
    joints = np.array([j for j in range(num_joints) if j not in set(excluded_joints)], dtype=int)
    metrics = OrderedDict()
    metrics["PCKh@0.5"] = _pck_mean(errors, valid, 0.5, joints)
    metrics["PCKh@0.1"] = _pck_mean(errors, valid, 0.1, joints)
    metrics["AUC"] = float(np.mean([_pck_mean(errors, valid, 0.5 * i / auc_steps, joints) for i in range(auc_steps)]))
    per_joint = _pck_per_joint(errors, valid, 0.5)
    for group, ids in MPII_JOINT_GROUPS.items():
        values = [per_joint[i] for i in ids if i < num_joints and not np.isnan(per_joint[i])]
        metrics[group] = float(np.mean(values)) if values else float("nan")
    return metrics


# ----------------------------------------------------------------------------- the evaluator
class KeypointEvaluator(DatasetEvaluator):
    """Evaluates keypoint predictions with the protocol of the dataset's `evaluator_type`.

    "coco_keypoints" / "ochuman": COCO OKS AP (`COCO_KEYPOINT_METRICS`); "crowdpose": CrowdPose AP
    (`CROWDPOSE_METRICS`); "mpii": PCKh (see `evaluate_pckh`). Results go under the task "keypoints".
    When `output_dir` is set, the COCO results are written to `keypoints_results.json` and the metrics
    to `keypoints_metrics.json` there.

    OKS scale: 0.53 x box area (xtcocotools `use_area=False`) for "crowdpose" and for a ground-truth
    json whose annotations have no `area` (the convention CrowdPose and AI Challenger are published
    with; warned once per json), the annotated area otherwise. The `use_area` argument, or else the
    dataset's metadata field `use_area` (`register_keypoint_dataset(..., use_area=...)`), overrides it;
    with use_area=True, areas missing from the json are filled from the box (w x h), as the loader does.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        use_area: Optional[bool] = None,
        evaluator_type: Optional[str] = None,
        sigmas: Optional[Sequence[float]] = None,
        pckh_auc_steps: int = 20,
    ):
        """
        Args:
            dataset_name: a registered dataset; its metadata gives evaluator_type, json_file and
                keypoint_oks_sigmas.
            output_dir: where to write results and metrics (nothing is written when None).
            distributed: gather predictions from all processes and evaluate on the main one.
            use_area: OKS scale from annotated areas (True) or 0.53 x box area (False). Default: the
                metadata's `use_area` when set, else chosen from the ground truth (`resolve_use_area`:
                False for "crowdpose" and for jsons without `area`, True otherwise).
            evaluator_type: overrides the metadata's.
            sigmas: overrides the metadata's OKS sigmas.
            pckh_auc_steps: thresholds of the PCKh AUC.
        """
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._evaluator_type = evaluator_type or self._metadata.get("evaluator_type", "coco_keypoints")
        if self._evaluator_type not in KEYPOINT_EVALUATOR_TYPES:
            raise ValueError(
                f"KeypointEvaluator: dataset {dataset_name!r} has evaluator_type {self._evaluator_type!r}; "
                f"supported: {KEYPOINT_EVALUATOR_TYPES}"
            )
        default_sigmas = get_keypoint_metadata(_DEFAULT_SIGMAS[self._evaluator_type]).sigmas
        if sigmas is None:
            sigmas = self._metadata.get("keypoint_oks_sigmas", None)
        self._sigmas = [float(s) for s in (default_sigmas if sigmas is None else sigmas)]
        self._output_dir = output_dir
        self._distributed = distributed
        if use_area is None:
            use_area = self._metadata.get("use_area", None)
        if use_area is not None and not isinstance(use_area, (bool, np.bool_)):
            raise TypeError(f"KeypointEvaluator({dataset_name!r}): use_area must be True, False or None, got "
                            f"{use_area!r} ({type(use_area).__name__})")
        self._use_area = use_area
        self._pckh_auc_steps = pckh_auc_steps
        self._predictions: List[Dict] = []

    def reset(self) -> None:
        self._predictions = []

    def _category_ids(self) -> Dict[int, int]:
        """contiguous class -> dataset category id (read lazily: the mapping appears once loaded)."""
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        return {v: k for k, v in mapping.items()} if mapping else {}

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        category_ids = self._category_ids()
        for inp, out in zip(inputs, outputs):
            record = {"image_id": inp["image_id"], "keypoints": []}
            if "instances" in out:
                record["keypoints"] = instances_to_keypoint_results(out["instances"], inp["image_id"], category_ids)
            self._predictions.append(record)

    def _gather(self) -> Optional[List[Dict]]:
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain(*gathered))

    def _ground_truth_json(self) -> Tuple[str, bool]:
        """(json to score, use_area): the metadata's json_file (generating the dataset first when it is
        missing, as for synthetic sets), or its copy made by `_with_optional_fields`."""
        path = self._metadata.get("json_file", None)
        if path is None:
            raise ValueError(f"KeypointEvaluator: dataset {self._dataset_name!r} has no json_file in its metadata")
        path = PathManager.get_local_path(path)
        if not os.path.exists(path) and self._dataset_name in DatasetCatalog.list():
            DatasetCatalog.get(self._dataset_name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"KeypointEvaluator: ground truth {path} of {self._dataset_name!r} does not exist")
        return self._with_optional_fields(path)

    def _with_optional_fields(self, path: str) -> Tuple[str, bool]:
        """(json to score, use_area). use_area is chosen on the json as written (`resolve_use_area`),
        before any filling. The json is `path`, or a copy of it that COCOeval can score fairly, when an
        annotation lacks optional fields (filled as the loader fills them: area from the box w x h,
        iscrowd 0, num_keypoints; with use_area False COCOeval reads 0.53 x the box area instead of
        the area) or is a person with a zero-area box or area (made an ignored region by
        `ignore_zero_area`). The copy, having areas, is to be scored with the use_area returned."""
        with open(path) as f:
            data = json.load(f)
        anns = data.get("annotations", [])
        use_area = resolve_use_area(path, anns, self._evaluator_type, self._use_area)
        _check_ground_truth(path, anns, use_area, areas_filled=True)  # missing areas are filled below
        complete = all("area" in a and "iscrowd" in a and ("keypoints" not in a or "num_keypoints" in a) for a in anns)
        if complete and not any(_zero_area_person(a) for a in anns):
            return path, use_area
        for a in anns:
            if "area" not in a and "bbox" in a:
                a["area"] = float(max(a["bbox"][2], 0.0) * max(a["bbox"][3], 0.0))
            a.setdefault("iscrowd", 0)
            if "keypoints" in a and "num_keypoints" not in a:
                a["num_keypoints"] = int(sum(1 for v in a["keypoints"][2::3] if v > 0))
        ignored = ignore_zero_area(anns)
        folder = self._output_dir or tempfile.mkdtemp(prefix="d2pose_gt_")
        PathManager.mkdirs(folder)
        filled = os.path.join(folder, "ground_truth_filled.json")
        with open(filled, "w") as f:
            json.dump(data, f)
        if not complete:
            logger.info("%s lacks optional fields (area / iscrowd / num_keypoints); evaluating against %s, a copy "
                        "with them filled as the loader fills them (area from the box, iscrowd 0), with OKS "
                        "scaled by %s", path, filled, "the area" if use_area else "0.53 x the box area")
        if ignored:
            logger.warning("%s: %d people with zero-area boxes or areas are scored as ignored regions (in %s): "
                           "annotation ids %s", path, len(ignored), filled,
                           ", ".join(map(str, ignored[:10])) + (" ..." if len(ignored) > 10 else ""))
        return filled, use_area

    def _score(self, results: List[Dict], image_ids: Sequence[int]) -> "OrderedDict[str, float]":
        if self._evaluator_type == "mpii":
            return evaluate_pckh(DatasetCatalog.get(self._dataset_name), results, self._pckh_auc_steps)
        gt_json, use_area = self._ground_truth_json()
        with open(gt_json) as f:
            all_ids = {im["id"] for im in json.load(f).get("images", [])}
        unseen = all_ids - set(image_ids)
        if unseen:  # e.g. images whose files are missing (dropped with a warning by the test loader)
            logger.warning("[KeypointEvaluator] %s: %d of %d ground-truth images were not evaluated (no input); "
                           "they are left out of the score: image ids %s", self._dataset_name, len(unseen),
                           len(all_ids), sorted(unseen)[:20])
        return evaluate_results_json(gt_json, results, self._evaluator_type, self._sigmas, use_area,
                                     image_ids=sorted(set(image_ids) & all_ids) if unseen else None)

    def _save(self, filename: str, content) -> None:
        if not self._output_dir:
            return
        PathManager.mkdirs(self._output_dir)
        path = os.path.join(self._output_dir, filename)
        logger.info("Saving %s", path)
        with PathManager.open(path, "w") as f:
            json.dump(content, f)

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        predictions = self._gather()
        if predictions is None:
            return OrderedDict()
        if len(predictions) == 0:
            logger.warning("[KeypointEvaluator] Did not receive valid predictions.")
            return OrderedDict()
        results = list(itertools.chain(*[p["keypoints"] for p in predictions]))
        self._save("keypoints_results.json", results)
        metrics = self._score(results, [p["image_id"] for p in predictions])
        logger.info(
            "Evaluation results for keypoints (%s, %s):\n%s",
            self._dataset_name, self._evaluator_type, create_small_table(metrics),
        )
        out = OrderedDict([("keypoints", metrics)])
        self._save("keypoints_metrics.json", out)
        return out
