"""The main job on built-in data (`make demo`; the command line is tools/train_demo.py): train the
flagship, Poseur top-down, on the synthetic benchmark on the CPU, evaluate it with d2pose's
KeypointEvaluator, print the AP table, draw predictions next to the ground truth and what the
method registered to show its model's inner workings (`d2pose.utils.visualizer.register_demo_drawing`:
for Poseur the decoder's reference and sampling points, for TransPose the dependency areas of a
person's keypoints); then run the trained model on whole images, with a synthetic person detector
finding the people (no ground-truth boxes): its AP on synthetic_pose_val_mini and the inference demo
(`d2pose.engine.demo`) on a few val images.

    python tools/train_demo.py [--config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml] [--iters 600]
                               [--time-budget 5] [--output-dir output/demo] [--num-vis 8]
                               [--detector-budget 2] [--num-images 6] [KEY VALUE ...]

The schedule is shortened so the demo stays quick on any CPU: at most --iters iterations (600),
and no more than fit --time-budget minutes of training, sized from a measurement of the first
steps on this machine in the precision the policy picks (d2pose.engine.timing; bfloat16 where the
CPU runs it natively, else float32). On two AVX-512 cores with native bfloat16 Poseur runs the 600
iterations in about 4 minutes; on two AVX2 cores in float32 the budget holds about 200. The demo
prints what it chose and why. `--time-budget 0` trains exactly --iters. Train the config as is for
the full result. An existing output folder is not reused silently: pass --resume to continue it,
or choose another --output-dir.

The person detector is the full recipe's (configs/Detectors/synthetic_person_faster_rcnn.yaml,
output/synthetic_person_faster_rcnn/model_final.pth) when it has been trained here, else one the
demo trained in an earlier run (--detector-cache), else one trained now for --detector-budget
minutes and cached for the next run; the demo says which. A detector trained for 2 minutes finds
fewer people than the full recipe's, and the whole-image AP shows it.
"""
import argparse
import os
import time
from typing import Dict, List, Optional, Tuple

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.evaluation import print_csv_format

from ..checkpoint import PoseCheckpointer
from ..config import get_d2pose_cfg
from ..utils.machine import cpu_capability
from ..utils.visualizer import demo_drawing, visualize_dataset
from . import timing
from .demo import main as run_demo
from .launcher import parse_args as parse_launcher_args
from .launcher import setup
from .trainer import Trainer

__all__ = ["REPO_ROOT", "DETECTOR_CONFIG", "choose_iterations", "person_detector", "whole_image_demo", "main"]

#: the repository, whose configs and output/ folder the demo uses
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTOR_CONFIG = os.path.join(REPO_ROOT, "configs/Detectors/synthetic_person_faster_rcnn.yaml")


def choose_iterations(args: argparse.Namespace) -> int:
    """--iters, or fewer where --time-budget minutes of training hold fewer on this machine."""
    if args.time_budget <= 0 or args.resume:
        return args.iters
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    start = time.perf_counter()
    step = timing.measure_step_time(cfg, steps=8, warmup=3)
    spent = time.perf_counter() - start
    budget = max(args.time_budget * 60.0 - spent, 0.0)
    iters = timing.fit_schedule(step.seconds_per_iter, budget, args.iters, min_iters=min(20, args.iters))
    why = (f"{step.seconds_per_iter:.3f} s/iteration measured over {step.steps} steps in {step.precision} "
           f"on this CPU ({cpu_capability()})")
    if iters < args.iters:
        print(f"[demo] training {iters} iterations instead of {args.iters}: {why}; {args.time_budget:g} min budget "
              f"(less {spent:.0f} s spent measuring) holds {iters}", flush=True)
    else:
        print(f"[demo] training {iters} iterations (~{step.minutes(iters):.1f} min): {why}", flush=True)
    return iters


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file",
                        default=os.path.join(REPO_ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"))
    parser.add_argument("--iters", type=int, default=600, help="the most iterations to train")
    parser.add_argument("--time-budget", type=float, default=5.0,
                        help="minutes of training at most; the schedule is sized from the first steps (0: --iters)")
    parser.add_argument("--output-dir", default=os.path.join(REPO_ROOT, "output/demo"))
    parser.add_argument("--num-vis", type=int, default=8)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--detector-budget", type=float, default=2.0,
                        help="minutes of training for the synthetic person detector of the whole-image demo, when "
                             "no trained one is cached (0: skip the whole-image part)")
    parser.add_argument("--detector-cache", default=os.path.join(REPO_ROOT, "output/demo-cache/person_detector"),
                        help="where the demo's person detector is kept between runs")
    parser.add_argument("--num-images", type=int, default=6, help="whole synthetic val images for the inference demo")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="more config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def _train(args: argparse.Namespace, iters: int) -> Tuple[CfgNode, Dict]:
    """Trains the config for `iters` iterations into --output-dir; returns (cfg, evaluation results)."""
    steps = f"({int(iters * 0.75)},{int(iters * 0.9)})"
    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps, "OUTPUT_DIR", args.output_dir,
            "SOLVER.CHECKPOINT_PERIOD", str(iters)] + list(args.opts)
    cfg = setup(parse_launcher_args(["--config-file", args.config_file] + (["--resume"] if args.resume else [])
                                    + opts))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()  # ends with an evaluation on cfg.DATASETS.TEST
    return cfg, trainer._last_eval_results


def main(argv: Optional[List[str]] = None) -> Dict:
    """Runs the demo (see the module docstring); returns the evaluation results, with the whole-image
    keypoint AP under "whole_images" when that part runs."""
    args = _parse_args(argv)
    if os.path.exists(os.path.join(args.output_dir, "model_final.pth")) and not args.resume:
        raise SystemExit(f"{args.output_dir} already holds a trained model; pass --resume or another --output-dir")
    cfg, results = _train(args, choose_iterations(args))
    print_csv_format(results)

    name = cfg.DATASETS.TEST[0]
    preds = os.path.join(args.output_dir, "inference", name, "keypoints_results.json")
    vis_dir = os.path.join(args.output_dir, "vis")
    written = visualize_dataset(name, vis_dir, num=args.num_vis, predictions=preds, overwrite=True)
    print(f"\nKeypoint AP on {name}: {results['keypoints']['AP']:.2f}  (predictions drawn in {vis_dir}: "
          f"{len(written)} images, ground truth left, predictions right)")
    topdown = cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator"
    drawing = demo_drawing(cfg.MODEL.TOPDOWN.HEAD) if topdown else None
    if drawing is not None:
        drawing(args.config_file, name, os.path.join(args.output_dir, "model_final.pth"), args.output_dir,
                args.num_vis, list(args.opts))
    if args.detector_budget > 0 and topdown:
        results["whole_images"] = whole_image_demo(args, cfg, name)
    return results


def person_detector(args: argparse.Namespace) -> str:
    """Weights of a synthetic person detector: the full recipe's if trained here, else the demo's
    cached one, else one trained now within --detector-budget minutes (and cached)."""
    full = os.path.join(REPO_ROOT, "output/synthetic_person_faster_rcnn/model_final.pth")
    cached = os.path.join(args.detector_cache, "model_final.pth")
    for path, what in ((full, "the full recipe's"), (cached, "the demo's cached")):
        if os.path.exists(path):
            print(f"[demo] person detector: {what} {path} (delete it to train a new one)", flush=True)
            return path
    probe = get_d2pose_cfg()
    probe.merge_from_file(DETECTOR_CONFIG)
    step = timing.measure_step_time(probe, steps=4, warmup=2)
    iters = timing.fit_schedule(step.seconds_per_iter, args.detector_budget * 60.0, 1100, min_iters=20)
    print(f"[demo] training the synthetic person detector for {iters} iterations ({step.seconds_per_iter:.2f} s/it "
          f"in {step.precision} on this CPU, {cpu_capability()}; {args.detector_budget:g} min budget; the full "
          f"recipe is 1100 iterations) into {args.detector_cache}", flush=True)
    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},{int(iters * 0.95)})",
            "SOLVER.WARMUP_ITERS", str(min(100, iters // 4)), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "OUTPUT_DIR", args.detector_cache, "DATASETS.TEST", "('synthetic_pose_val_mini',)"]
    det_cfg = setup(parse_launcher_args(["--config-file", DETECTOR_CONFIG] + opts))
    trainer = Trainer(det_cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    box = trainer._last_eval_results.get("bbox", {})
    print(f"[demo] person detector box AP on {det_cfg.DATASETS.TEST[0]}: {box.get('AP', float('nan')):.1f}", flush=True)
    return cached


def whole_image_demo(args: argparse.Namespace, cfg: CfgNode, name: str) -> float:
    """The trained pose model with a synthetic person detector on whole val images (no ground-truth
    boxes): keypoint AP on synthetic_pose_val_mini, and drawn predictions of a few images of `name`."""
    weights = person_detector(args)
    detector_opts = ["MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", DETECTOR_CONFIG, "MODEL.TOPDOWN.DETECTOR.WEIGHTS", weights]
    pose_weights = os.path.join(args.output_dir, "model_final.pth")
    opts = list(args.opts) + detector_opts + ["MODEL.WEIGHTS", pose_weights, "DATASETS.TEST",
                                              "('synthetic_pose_val_mini',)",
                                              "OUTPUT_DIR", os.path.join(args.output_dir, "whole_images")]
    eval_cfg = setup(parse_launcher_args(["--config-file", args.config_file, "--eval-only"] + opts))
    model = Trainer.build_model(eval_cfg)
    PoseCheckpointer(model, strict=True).load(pose_weights)
    results = Trainer.test(eval_cfg, model)
    ap = results["synthetic_pose_val_mini"]["keypoints"]["AP"] if "synthetic_pose_val_mini" in results else \
        results["keypoints"]["AP"]
    files = [r["file_name"] for r in DatasetCatalog.get(name)[: args.num_images]]
    out = os.path.join(args.output_dir, "whole_images", "vis")
    summary = run_demo(["--config-file", args.config_file, "--input", *files, "--output", out, "--json",
                        os.path.join(out, "predictions.json"), "--overwrite", "--opts"]
                       + list(args.opts) + detector_opts + ["MODEL.WEIGHTS", pose_weights])
    print(f"\nWhole images, people found by the synthetic person detector: keypoint AP {ap:.2f} on "
          f"synthetic_pose_val_mini; {len(summary['written'])} drawn images of {name} in {out}")
    return ap
