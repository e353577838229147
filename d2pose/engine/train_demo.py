"""The main job on built-in data (`make demo`; the command line is tools/train_demo.py), in three parts:

1. The trained models shipped with the package (d2pose.model_zoo, `d2pose://` weights): TransPose-R
   (`TransPose/synthetic_transpose_r_short.yaml`) on whole images of synthetic_pose_val, its people
   found by the shipped person detector (`Detectors/synthetic_person_detector_small.yaml`): the
   keypoint AP table (AP, AP50, AP75, AR) measured now beside the one MODELS.json records, then the
   inference demo (`d2pose.engine.demo`: "person 97%" labels, low-confidence people and keypoints
   left out) on a few val images.
2. Training working: a short run of the flagship, Poseur top-down
   (`projects/Poseur/configs/synthetic_poseur_topdown.yaml`), on the CPU, evaluated on
   synthetic_pose_val_mini about five times along the way (TEST.EVAL_PERIOD); its training loss and
   AP over iterations plotted (d2pose.utils.plots) against the AP the shipped model reaches on the same
   split with ground-truth boxes after its longer schedule; its predictions drawn beside the ground
   truth, and what the method registered to show its model's inner workings
   (`d2pose.utils.visualizer.register_demo_drawing`: for Poseur the decoder's reference and sampling
   points, for TransPose the dependency areas of a person's keypoints).
3. Where everything is: the AP tables, the drawings, the plot and the run folder.

    python tools/train_demo.py [--config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml] [--iters 600]
                               [--total-budget 9] [--time-budget 5] [--output-dir output/demo] [--num-vis 8]
                               [--num-images 6] [--skip-shipped] [KEY VALUE ...]

Time: the whole demo aims at --total-budget minutes (9). Part 1 takes what it takes (evaluating 500
whole images: ~1-2 min on two AVX-512 cores, up to ~4x that on two AVX2 cores in float32); the
training of part 2 gets at most --time-budget minutes (5) and no more than the total leaves after part
1, less the periodic evaluations and the drawings. Its schedule is sized from a measurement of the
first steps on this machine in the precision the policy picks (d2pose.engine.timing; bfloat16 where
the CPU runs it natively, else float32): at most --iters iterations, at least 20. The demo prints what
it chose and why. `--time-budget 0` trains exactly --iters. Train the config as is for the full
result. The run goes to OUTPUT_DIR/train; an existing run there is not reused silently: pass --resume
to continue it, or choose another --output-dir.

The demo uses only the shipped models and the one it trains, never weights an earlier run left in
the repository's output/ folder.
"""
import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from tabulate import tabulate

from ..config import get_d2pose_cfg
from ..model_zoo import get_checkpoint_url, get_config_file, get_weights_file, trained_models
from ..utils.machine import cpu_capability
from ..utils.plots import plot_training
from ..utils.visualizer import demo_drawing, visualize_dataset
from . import timing
from .demo import main as run_demo
from .launcher import parse_args as parse_launcher_args
from .launcher import previous_run_files, setup
from .trainer import Trainer
from .zoo import evaluate_weights

__all__ = ["REPO_ROOT", "POSE_MODEL", "DETECTOR_MODEL", "SHIPPED_DATASET", "CURVE_DATASET", "EVAL_POINTS",
           "shipped_model", "choose_iterations", "training_budget", "eval_period", "run_shipped",
           "train_flagship", "main"]

#: the repository, whose configs the demo uses
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the shipped pose model and the shipped person detector that finds its people
POSE_MODEL = "TransPose/synthetic_transpose_r_short.yaml"
DETECTOR_MODEL = "Detectors/synthetic_person_detector_small.yaml"
#: the split part 1 scores the shipped models on (whole images) and the one part 2 evaluates on
SHIPPED_DATASET = "synthetic_pose_val"
CURVE_DATASET = "synthetic_pose_val_mini"
#: how many times the flagship is evaluated while it trains (the AP curve's points)
EVAL_POINTS = 5
#: Detectron2's writers record the latest metrics every 20 iterations: an evaluation period that is a
#: multiple of it puts every evaluation into metrics.json
WRITE_PERIOD = 20
# Time reserved in part 2's budget, in training steps of the flagship so that it scales with the
# machine as the steps do: one evaluation on synthetic_pose_val_mini costs ~7 steps (measured
# 2026-12-07, Poseur synthetic config, 11.4 s vs 1.74 s/step on one loaded core), rounded up to
# EVAL_STEPS; building the trainer, the final checkpoint, the drawings and the plot ~DRAWING_STEPS
EVAL_STEPS = 8
DRAWING_STEPS = 30


def shipped_model(name: str, trained_dir: str = "") -> Tuple[str, Dict[str, Any]]:
    """(weights, MODELS.json record) of a shipped model: its d2pose:// URL, or with `trained_dir` the
    file in that folder (a folder laid out as d2pose/model_zoo/trained/, e.g. a regenerated zoo)."""
    if not trained_dir:
        get_weights_file(name)  # the file is there (else FileNotFoundError naming it)
        return get_checkpoint_url(name), trained_models()[name]
    manifest = os.path.join(trained_dir, "MODELS.json")
    with open(manifest) as f:
        records = json.load(f)
    if name not in records:
        raise FileNotFoundError(f"{manifest} records no model {name!r} "
                                f"(it has: {', '.join(sorted(records)) or 'none'})")
    return os.path.join(trained_dir, records[name]["file"]), records[name]


def _recorded(record: Dict[str, Any], dataset: str, kind: str) -> Dict[str, float]:
    """The AP a MODELS.json record holds for `dataset` and `kind` ({} where it has none)."""
    return dict(record.get("ap", {}).get(dataset, {}).get(kind, {}))


def _ap_table(rows: List[Tuple[str, Dict[str, float]]]) -> str:
    """A pipe table of (label, {AP, AP50, AP75, AR}) rows; what a row lacks shows as "-"."""
    keys = ("AP", "AP50", "AP75", "AR")
    body = [[label] + [f"{row[k]:.1f}" if k in row else "-" for k in keys] for label, row in rows]
    return tabulate(body, headers=["", *keys], tablefmt="pipe", stralign="left")


def run_shipped(args: argparse.Namespace) -> Dict[str, Any]:
    """Part 1: the shipped pose model behind the shipped detector on whole images of --shipped-dataset
    (AP now and as recorded), then the inference demo's drawings of --num-images of its images."""
    try:
        pose_weights, pose_record = shipped_model(POSE_MODEL, args.trained_dir)
        detector_weights, _ = shipped_model(DETECTOR_MODEL, args.trained_dir)
    except FileNotFoundError as e:
        raise SystemExit(f"{e}\nThe shipped models are missing: `python tools/train_model_zoo.py` regenerates them, "
                         "or pass --skip-shipped to run only the training part") from None
    dataset, out = args.shipped_dataset, os.path.join(args.output_dir, "shipped")
    images = DatasetCatalog.get(dataset)
    print(f"[demo] part 1: the shipped {POSE_MODEL} ({pose_weights}) on {len(images)} whole images of {dataset}, "
          f"people found by the shipped {DETECTOR_MODEL} ({detector_weights})", flush=True)
    start = time.perf_counter()
    detector = {"config": DETECTOR_MODEL, "weights": detector_weights}
    measured = evaluate_weights(POSE_MODEL, pose_weights, dataset, os.path.join(out, "eval"), "keypoints", detector)
    recorded = _recorded(pose_record, dataset, "keypoints_whole_images")
    origin = f"recorded ({pose_record.get('iterations', '?')} it, {pose_record.get('date', '?')})"
    table = _ap_table([("measured now", measured), (origin, recorded)])
    print(f"\nShipped TransPose-R + person detector, keypoint AP on whole images of {dataset} "
          f"({time.perf_counter() - start:.0f} s):\n{table}\n", flush=True)

    vis = os.path.join(out, "vis")
    files = [r["file_name"] for r in images[: args.num_images]]
    opts = ["MODEL.WEIGHTS", pose_weights, "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", DETECTOR_MODEL,
            "MODEL.TOPDOWN.DETECTOR.WEIGHTS", detector_weights, "DATASETS.TEST", f"('{dataset}',)"]
    drawn = run_demo(["--config-file", get_config_file(POSE_MODEL), "--input", *files, "--output", vis,
                      "--json", os.path.join(vis, "predictions.json"), "--overwrite", "--opts", *opts])
    print(f"[demo] the shipped models on {len(drawn['written'])} images of {dataset}: {vis}", flush=True)
    return {"model": POSE_MODEL, "detector": DETECTOR_MODEL, "dataset": dataset, "whole_images": measured,
            "recorded": recorded, "table": table, "drawings": vis}


def training_budget(args: argparse.Namespace, spent_seconds: float) -> float:
    """Minutes of training for part 2: --time-budget, cut to what --total-budget leaves after the
    `spent_seconds` already spent (0 stays 0: exactly --iters)."""
    if args.time_budget <= 0 or args.total_budget <= 0:
        return args.time_budget
    left = args.total_budget - spent_seconds / 60.0
    budget = min(args.time_budget, left)
    if budget < args.time_budget:
        print(f"[demo] {spent_seconds / 60:.1f} min spent before training: {max(budget, 0):.1f} of the "
              f"{args.total_budget:g} min total are left for part 2", flush=True)
    return max(budget, 0.01)


def choose_iterations(args: argparse.Namespace, budget_minutes: Optional[float] = None, reserve_steps: int = 0) -> int:
    """--iters, or fewer where `budget_minutes` (default --time-budget) of training hold fewer on this
    machine, `reserve_steps` training steps' time being kept for what the run does besides training."""
    budget_minutes = args.time_budget if budget_minutes is None else budget_minutes
    if args.time_budget <= 0 or args.resume:
        return args.iters
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    start = time.perf_counter()
    step = timing.measure_step_time(cfg, steps=8, warmup=3)
    spent = time.perf_counter() - start
    reserve = reserve_steps * step.seconds_per_iter
    budget = max(budget_minutes * 60.0 - spent - reserve, 0.0)
    iters = timing.fit_schedule(step.seconds_per_iter, budget, args.iters, min_iters=min(20, args.iters))
    why = (f"{step.seconds_per_iter:.3f} s/iteration measured over {step.steps} steps in {step.precision} "
           f"on this CPU ({cpu_capability()})")
    kept = f", less {reserve:.0f} s for evaluations and drawings" if reserve_steps else ""
    if iters < args.iters:
        print(f"[demo] training {iters} iterations instead of {args.iters}: {why}; {budget_minutes:.1f} min budget "
              f"(less {spent:.0f} s spent measuring{kept}) holds {iters}", flush=True)
    else:
        print(f"[demo] training {iters} iterations (~{step.minutes(iters):.1f} min): {why}", flush=True)
    return iters


def eval_period(iters: int, points: int = EVAL_POINTS) -> int:
    """TEST.EVAL_PERIOD for about `points` evaluations in `iters` iterations (the last one at the end),
    a multiple of Detectron2's write period so that metrics.json records each."""
    return max(WRITE_PERIOD, WRITE_PERIOD * round(iters / points / WRITE_PERIOD))


def train_flagship(args: argparse.Namespace, iters: int) -> Tuple[CfgNode, Dict]:
    """Part 2's run: --config-file for `iters` iterations into OUTPUT_DIR/train, evaluated on
    CURVE_DATASET every `eval_period(iters)`; returns (cfg, the last evaluation's results)."""
    steps = f"({int(iters * 0.75)},{int(iters * 0.9)})"
    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps, "OUTPUT_DIR", os.path.join(args.output_dir, "train"),
            "SOLVER.CHECKPOINT_PERIOD", str(iters), "DATASETS.TEST", f"('{CURVE_DATASET}',)",
            "TEST.EVAL_PERIOD", str(eval_period(iters))] + list(args.opts)
    cfg = setup(parse_launcher_args(["--config-file", args.config_file] + (["--resume"] if args.resume else [])
                                    + opts))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()  # evaluates every TEST.EVAL_PERIOD and at the end
    return cfg, trainer._last_eval_results


def _draw_flagship(args: argparse.Namespace, cfg: CfgNode) -> List[str]:
    """The trained flagship's predictions beside the ground truth, and its method's drawing; returns
    the folders written."""
    name, run = cfg.DATASETS.TEST[0], cfg.OUTPUT_DIR
    preds = os.path.join(run, "inference", name, "keypoints_results.json")
    vis = os.path.join(run, "vis")
    written = visualize_dataset(name, vis, num=args.num_vis, predictions=preds, overwrite=True)
    print(f"[demo] {len(written)} images of {name} in {vis}: ground truth left, predictions right", flush=True)
    topdown = cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator"
    drawing = demo_drawing(cfg.MODEL.TOPDOWN.HEAD) if topdown else None
    if drawing is not None:  # into run/vis_<what it draws>
        drawing(args.config_file, name, os.path.join(run, "model_final.pth"), run, args.num_vis, list(args.opts))
    extra = sorted(n for n in os.listdir(run) if n.startswith("vis_") and os.path.isdir(os.path.join(run, n)))
    return [vis] + [os.path.join(run, n) for n in extra]


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file",
                        default=os.path.join(REPO_ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"),
                        help="the config part 2 trains")
    parser.add_argument("--iters", type=int, default=600, help="the most iterations to train")
    parser.add_argument("--total-budget", type=float, default=9.0,
                        help="minutes for the whole demo; part 2 trains within what part 1 leaves (0: no limit)")
    parser.add_argument("--time-budget", type=float, default=5.0,
                        help="minutes of training at most; the schedule is sized from the first steps (0: --iters)")
    parser.add_argument("--output-dir", default=os.path.join(REPO_ROOT, "output/demo"))
    parser.add_argument("--num-vis", type=int, default=8, help="drawings of the trained model")
    parser.add_argument("--num-images", type=int, default=6, help="whole val images the shipped models draw")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR/train")
    parser.add_argument("--skip-shipped", action="store_true", help="leave out part 1 (the shipped models)")
    parser.add_argument("--shipped-dataset", default=SHIPPED_DATASET, help=argparse.SUPPRESS)
    parser.add_argument("--trained-dir", default="", help=argparse.SUPPRESS)  # tests: a zoo folder of their own
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="more config overrides KEY VALUE ... of part 2")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Runs the demo (see the module docstring). Returns {"shipped": part 1's AP now and recorded
    (absent with --skip-shipped), "training": {"iterations", "AP" (the last evaluation's), "results",
    "run"}, "reference": the shipped model's recorded AP on CURVE_DATASET (or None), "plot": its path,
    "drawings": the folders of drawings}."""
    args = _parse_args(argv)
    start = time.perf_counter()
    run = os.path.join(args.output_dir, "train")
    if previous_run_files(run) and not args.resume:
        raise SystemExit(f"{run} already holds a training run; pass --resume or another --output-dir")
    results: Dict[str, Any] = {"drawings": []}
    if not args.skip_shipped:
        results["shipped"] = run_shipped(args)
        results["drawings"].append(results["shipped"]["drawings"])

    print(f"[demo] part 2: training {os.path.relpath(args.config_file, REPO_ROOT)} from scratch, evaluated on "
          f"{CURVE_DATASET} along the way", flush=True)
    budget = training_budget(args, time.perf_counter() - start)
    iters = choose_iterations(args, budget, reserve_steps=EVAL_POINTS * EVAL_STEPS + DRAWING_STEPS)
    cfg, evaluation = train_flagship(args, iters)  # Detectron2 prints each evaluation's table
    ap = evaluation.get("keypoints", {}).get("AP", float("nan"))
    results["training"] = {"iterations": iters, "AP": ap, "results": evaluation, "run": cfg.OUTPUT_DIR}

    reference, label = _reference(args)
    plot = os.path.join(args.output_dir, "training.png")
    plot_training(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), plot, reference=reference, reference_label=label,
                  title=f"{os.path.basename(args.config_file)}: {iters} iterations, evaluated on {CURVE_DATASET}")
    results.update(plot=plot, reference=reference)
    results["drawings"] += _draw_flagship(args, cfg)
    _summary(results, time.perf_counter() - start)
    return results


def _reference(args: argparse.Namespace) -> Tuple[Optional[float], str]:
    """The shipped pose model's recorded AP on CURVE_DATASET with ground-truth boxes, and its label."""
    try:
        _, record = shipped_model(POSE_MODEL, args.trained_dir)
    except (FileNotFoundError, KeyError):
        return None, ""
    ap = _recorded(record, CURVE_DATASET, "keypoints_gt_boxes").get("AP")
    if ap is None:
        return None, ""
    return ap, f"shipped TransPose-R ({record.get('iterations', '?')} it x {record.get('batch', '?')}): AP {ap:.1f}"


def _summary(results: Dict[str, Any], seconds: float) -> None:
    """Part 3: where everything is."""
    lines = [f"\n[demo] done in {seconds / 60:.1f} min."]
    if "shipped" in results:
        shipped = results["shipped"]
        lines.append(f"Shipped models, keypoint AP on whole images of {shipped['dataset']}:\n{shipped['table']}")
    train = results["training"]
    lines.append(f"Trained now: {train['iterations']} iterations, keypoint AP {train['AP']:.1f} on {CURVE_DATASET} "
                 f"(ground-truth boxes)" + (f"; the shipped model's, after its longer schedule: "
                                            f"{results['reference']:.1f}" if results["reference"] is not None else ""))
    lines.append(f"  training run (checkpoints, metrics.json, log.txt): {train['run']}")
    lines.append(f"  loss and AP over iterations: {results['plot']}")
    lines += [f"  drawings: {folder}" for folder in results["drawings"]]
    print("\n".join(lines), flush=True)
