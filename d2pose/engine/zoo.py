"""Regenerating the small trained models of d2pose's model zoo (d2pose/model_zoo/trained/; the command
line is tools/train_model_zoo.py): each recipe of `ZOO_RECIPES` is trained from scratch with d2pose's
launcher, its weights stored in float16 (`{"model": state_dict}`, `torch.load(weights_only=True)`),
evaluated from that file with d2pose's evaluators, and recorded in MODELS.json with its sha256,
recipe, schedule, minutes, machine and AP:

* the person detector: box AP on synthetic_pose_val and synthetic_pose_val_mini;
* the pose model: keypoint AP with ground-truth boxes, and on whole images with the shipped
  detector's boxes (OKS-NMS), on the same two splits.

`tests/model_zoo/test_trained.py` checks every shipped file against its digest and its AP on
synthetic_pose_val_mini against the record.
"""
import argparse
import datetime
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.utils import comm

from ..checkpoint import PoseCheckpointer
from ..config.device import cpu_fallback
from ..model_zoo import MANIFEST, TRAINED_DIR, file_digest, get_config, get_config_file, trained_models
from ..utils.io import atomic_write
from ..utils.machine import cpu_capability, cpu_model
from .launcher import main as launch_main
from .launcher import parse_args as parse_launcher_args
from .trainer import Trainer

__all__ = ["ZooRecipe", "ZOO_RECIPES", "ZOO_SPLITS", "to_float16", "evaluate_weights", "train_recipe", "main"]

#: the repository (recipes are recorded relative to it)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the splits every shipped model is scored on (the second one by the test of the shipped files)
ZOO_SPLITS = ("synthetic_pose_val", "synthetic_pose_val_mini")


@dataclass(frozen=True)
class ZooRecipe:
    """A shipped model: its config name (d2pose.model_zoo), "detector" or "pose", and for a pose model
    the config name of the shipped detector that finds its people on whole images."""

    name: str
    kind: str
    detector: str = ""

    @property
    def file(self) -> str:
        return os.path.splitext(os.path.basename(self.name))[0] + ".pth"


ZOO_RECIPES: Sequence[ZooRecipe] = (
    ZooRecipe("Detectors/synthetic_person_detector_small.yaml", "detector"),
    ZooRecipe("TransPose/synthetic_transpose_r_short.yaml", "pose", "Detectors/synthetic_person_detector_small.yaml"),
)


def to_float16(source: str, destination: str) -> int:
    """Writes the float16 copy of a d2pose checkpoint's model weights (floating tensors halved, the rest
    kept) to `destination` as {"model": state_dict}; returns the number of values."""
    state = torch.load(source, map_location="cpu", weights_only=True)["model"]
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_write(destination, lambda f: torch.save({"model": half}, f))
    return sum(v.numel() for v in half.values())


def _metrics(results: Dict, task: str) -> Dict[str, float]:
    found = results.get(task, {})
    return {k: round(float(v), 2) for k, v in found.items() if k in ("AP", "AP50", "AP75", "AR")}


def evaluate_weights(name: str, weights: str, dataset: str, output_dir: str, task: str,
                     detector: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """AP (AP, AP50, AP75, AR where reported) of config `name` with `weights` on `dataset`; `task`:
    "bbox" (detector) or "keypoints"; `detector`: {"config": name, "weights": file or URL} for whole
    images (without it a top-down model is scored on ground-truth boxes)."""
    opts = ["MODEL.WEIGHTS", weights, "DATASETS.TEST", f"('{dataset}',)", "OUTPUT_DIR", output_dir]
    if detector:
        opts += ["MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", detector["config"],
                 "MODEL.TOPDOWN.DETECTOR.WEIGHTS", detector["weights"]]
    cfg: CfgNode = get_config(name, opts=opts)
    cpu_fallback(cfg)  # quietly, as Detectron2's model_zoo.get
    model = Trainer.build_model(cfg)
    PoseCheckpointer(model, strict=True).load(weights)
    results = Trainer.test(cfg, model)
    return _metrics(results.get(dataset, results), task)


def train_recipe(recipe: ZooRecipe, output_root: str, opts: Sequence[str] = ()) -> Dict:
    """Trains `recipe` from scratch into output_root/<file stem> (an earlier run there is moved aside);
    returns {"weights": model_final.pth, "minutes": ..., "iterations": ..., "batch": ...}."""
    out = os.path.join(output_root, os.path.splitext(recipe.file)[0])
    args = parse_launcher_args(["--config-file", get_config_file(recipe.name), "--overwrite", "OUTPUT_DIR", out,
                                *opts])
    start = time.perf_counter()
    launch_main(args)
    cfg = get_config(recipe.name, opts=list(opts))
    return {"weights": os.path.join(out, "model_final.pth"), "minutes": round((time.perf_counter() - start) / 60, 1),
            "iterations": int(cfg.SOLVER.MAX_ITER), "batch": int(cfg.SOLVER.IMS_PER_BATCH)}


def _score(recipe: ZooRecipe, weights: str, output_root: str, detector_weights: str,
           splits: Sequence[str] = ZOO_SPLITS) -> Dict[str, Dict]:
    ap = {}
    for split in splits:
        out = os.path.join(output_root, "eval", os.path.splitext(recipe.file)[0], split)
        if recipe.kind == "detector":
            ap[split] = {"bbox": evaluate_weights(recipe.name, weights, split, out, "bbox")}
            continue
        ap[split] = {"keypoints_gt_boxes": evaluate_weights(recipe.name, weights, split, out + "_gt", "keypoints")}
        if recipe.detector:
            detector = {"config": recipe.detector, "weights": detector_weights}
            ap[split]["keypoints_whole_images"] = evaluate_weights(recipe.name, weights, split, out + "_whole",
                                                                   "keypoints", detector)
    return ap


def _record(recipe: ZooRecipe, run: Dict, path: str, values: int, ap: Dict) -> Dict:
    return {"file": os.path.basename(path), "sha256": file_digest(path), "bytes": os.path.getsize(path),
            "dtype": "float16", "values": values, "kind": recipe.kind, "detector": recipe.detector,
            "recipe": f"python train_net.py --config-file {os.path.relpath(get_config_file(recipe.name), REPO_ROOT)}",
            "iterations": run["iterations"], "batch": run["batch"], "train_minutes": run["minutes"],
            "date": datetime.date.today().isoformat(), "machine": f"{cpu_model()}, {cpu_capability()}",
            "ap": ap}


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-root", default="output/model_zoo", help="where the training runs go")
    parser.add_argument("--dest", default=TRAINED_DIR, help="where the float16 files and MODELS.json go")
    parser.add_argument("--only", nargs="*", default=None, help="config names to regenerate (default: all)")
    parser.add_argument("--splits", nargs="+", default=list(ZOO_SPLITS), help="the splits to score on")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE overrides of every recipe (a quick check of this pipeline, e.g. "
                             "SOLVER.MAX_ITER 5; the shipped files are the recipes as they are)")
    args = parser.parse_args(argv)
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts  # "--" ends --only / --splits
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    """Regenerates the shipped models (all, or --only some); returns the new MODELS.json content."""
    args = _parse_args(argv)
    os.makedirs(args.dest, exist_ok=True)
    manifest_path = os.path.join(args.dest, os.path.basename(MANIFEST))
    records = trained_models() if args.dest == TRAINED_DIR else {}
    detector_file = {}
    for recipe in ZOO_RECIPES:
        dest = os.path.join(args.dest, recipe.file)
        if args.only is not None and recipe.name not in args.only:
            detector_file[recipe.name] = dest
            continue
        run = train_recipe(recipe, args.output_root, args.opts)
        values = to_float16(run["weights"], dest)
        detector_file[recipe.name] = dest
        ap = _score(recipe, dest, args.output_root, detector_file.get(recipe.detector, ""), args.splits)
        records[recipe.name] = _record(recipe, run, dest, values, ap)
        if comm.is_main_process():
            atomic_write(manifest_path, lambda f: f.write(json.dumps(records, indent=2, sort_keys=True) + "\n"), "w")
        print(f"[model zoo] {recipe.name}: {dest} ({records[recipe.name]['bytes'] / 1e6:.1f} MB), AP {json.dumps(ap)}",
              flush=True)
    return records
