#!/usr/bin/env python
"""The main job on built-in data (`make demo`): train the flagship, Poseur top-down, on the synthetic
benchmark on the CPU, evaluate it with d2pose's KeypointEvaluator, print the AP table, draw
predictions next to the ground truth and, for Poseur, the decoder's reference and sampling points
(for TransPose, the dependency areas of a person's keypoints); then run the trained model on whole
images, with a synthetic person detector finding the people (no ground-truth boxes): its AP on
synthetic_pose_val_mini and the inference demo (tools/demo.py) on a few val images.

    python tools/train_demo.py [--config-file configs/Poseur/synthetic_poseur_topdown.yaml] [--iters 600]
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
import time
import argparse
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def choose_iterations(args) -> int:
    """--iters, or fewer where --time-budget minutes of training hold fewer on this machine."""
    if args.time_budget <= 0 or args.resume:
        return args.iters
    import d2pose  # noqa: F401
    from d2pose.config import get_d2pose_cfg
    from d2pose.engine.timing import fit_schedule, measure_step_time
    from d2pose.utils.machine import cpu_capability

    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    start = time.perf_counter()
    timing = measure_step_time(cfg, steps=8, warmup=3)
    spent = time.perf_counter() - start
    budget = max(args.time_budget * 60.0 - spent, 0.0)
    iters = fit_schedule(timing.seconds_per_iter, budget, args.iters, min_iters=min(20, args.iters))
    why = (f"{timing.seconds_per_iter:.3f} s/iteration measured over {timing.steps} steps in {timing.precision} "
           f"on this CPU ({cpu_capability()})")
    if iters < args.iters:
        print(f"[demo] training {iters} iterations instead of {args.iters}: {why}; {args.time_budget:g} min budget "
              f"(less {spent:.0f} s spent measuring) holds {iters}", flush=True)
    else:
        print(f"[demo] training {iters} iterations (~{timing.minutes(iters):.1f} min): {why}", flush=True)
    return iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/Poseur/synthetic_poseur_topdown.yaml"))
    parser.add_argument("--iters", type=int, default=600, help="the most iterations to train")
    parser.add_argument("--time-budget", type=float, default=5.0,
                        help="minutes of training at most; the schedule is sized from the first steps (0: --iters)")
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "output/demo"))
    parser.add_argument("--num-vis", type=int, default=8)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--detector-budget", type=float, default=2.0,
                        help="minutes of training for the synthetic person detector of the whole-image demo, when "
                             "no trained one is cached (0: skip the whole-image part)")
    parser.add_argument("--detector-cache", default=os.path.join(ROOT, "output/demo-cache/person_detector"),
                        help="where the demo's person detector is kept between runs")
    parser.add_argument("--num-images", type=int, default=6, help="whole synthetic val images for the inference demo")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="more config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    import train_net  # the repo's launcher
    from detectron2.engine import default_argument_parser
    from detectron2.evaluation import print_csv_format

    if os.path.exists(os.path.join(args.output_dir, "model_final.pth")) and not args.resume:
        raise SystemExit(f"{args.output_dir} already holds a trained model; pass --resume or another --output-dir")
    iters = choose_iterations(args)
    steps = f"({int(iters * 0.75)},{int(iters * 0.9)})"
    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps, "OUTPUT_DIR", args.output_dir,
            "SOLVER.CHECKPOINT_PERIOD", str(iters)] + list(args.opts)
    d2_args = default_argument_parser().parse_args(["--config-file", args.config_file] + (["--resume"] if args.resume else []) + opts)
    cfg = train_net.setup(d2_args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()  # ends with an evaluation on cfg.DATASETS.TEST
    results = trainer._last_eval_results
    print_csv_format(results)

    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = cfg.DATASETS.TEST[0]
    preds = os.path.join(args.output_dir, "inference", name, "keypoints_results.json")
    vis_dir = os.path.join(args.output_dir, "vis")
    import importlib.util

    spec = importlib.util.spec_from_file_location("visualize_data", os.path.join(ROOT, "tools", "visualize_data.py"))
    vis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vis)
    written = vis.main(["--dataset", name, "--output-dir", vis_dir, "--num", str(args.num_vis), "--predictions", preds,
                        "--overwrite"])
    print(f"\nKeypoint AP on {name}: {results['keypoints']['AP']:.2f}  (predictions drawn in {vis_dir}: "
          f"{len(written)} images, ground truth left, predictions right)")
    if cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator" and cfg.MODEL.TOPDOWN.HEAD == "PoseurHead":
        spec = importlib.util.spec_from_file_location("visualize_poseur", os.path.join(ROOT, "tools", "visualize_poseur.py"))
        vp = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(vp)
        inside = os.path.join(args.output_dir, "vis_poseur")
        drawn = vp.main(["--config-file", args.config_file, "--dataset", name, "--num", str(args.num_vis),
                         "--output-dir", inside, "--overwrite", "MODEL.WEIGHTS",
                         os.path.join(args.output_dir, "model_final.pth")] + list(args.opts))
        print(f"Poseur's coarse proposals, per-layer reference points and left-wrist EMSDA samples: "
              f"{len(drawn)} crops in {inside}")
    if cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator" and cfg.MODEL.TOPDOWN.HEAD == "TransPoseHead":
        spec = importlib.util.spec_from_file_location("visualize_dependency",
                                                      os.path.join(ROOT, "tools", "visualize_dependency.py"))
        vd = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(vd)
        areas = os.path.join(args.output_dir, "vis_dependency", f"{name}_0_0.png")
        vd.main(["--config-file", args.config_file, "--dataset", name, "--output", areas, "--overwrite"]
                + list(args.opts) + ["MODEL.WEIGHTS", os.path.join(args.output_dir, "model_final.pth")])
        print(f"TransPose's dependency and affected areas of the first person of {name}: {areas}")
    if args.detector_budget > 0 and cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator":
        results["whole_images"] = whole_image_demo(args, cfg, name)
    return results


def person_detector(args) -> str:
    """Weights of a synthetic person detector: the full recipe's if trained here, else the demo's
    cached one, else one trained now within --detector-budget minutes (and cached)."""
    full = os.path.join(ROOT, "output/synthetic_person_faster_rcnn/model_final.pth")
    cached = os.path.join(args.detector_cache, "model_final.pth")
    for path, what in ((full, "the full recipe's"), (cached, "the demo's cached")):
        if os.path.exists(path):
            print(f"[demo] person detector: {what} {path} (delete it to train a new one)", flush=True)
            return path
    import train_net
    from detectron2.engine import default_argument_parser

    from d2pose.engine.timing import fit_schedule, measure_step_time
    from d2pose.config import get_d2pose_cfg
    from d2pose.utils.machine import cpu_capability

    config = os.path.join(ROOT, "configs/Detectors/synthetic_person_faster_rcnn.yaml")
    probe = get_d2pose_cfg()
    probe.merge_from_file(config)
    timing = measure_step_time(probe, steps=4, warmup=2)
    iters = fit_schedule(timing.seconds_per_iter, args.detector_budget * 60.0, 1100, min_iters=20)
    print(f"[demo] training the synthetic person detector for {iters} iterations ({timing.seconds_per_iter:.2f} s/it "
          f"in {timing.precision} on this CPU, {cpu_capability()}; {args.detector_budget:g} min budget; the full "
          f"recipe is 1100 iterations) into {args.detector_cache}", flush=True)
    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},{int(iters * 0.95)})",
            "SOLVER.WARMUP_ITERS", str(min(100, iters // 4)), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "OUTPUT_DIR", args.detector_cache, "DATASETS.TEST", "('synthetic_pose_val_mini',)"]
    d2_args = default_argument_parser().parse_args(["--config-file", config] + opts)
    det_cfg = train_net.setup(d2_args)
    trainer = train_net.Trainer(det_cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    box = trainer._last_eval_results.get("bbox", {})
    print(f"[demo] person detector box AP on {det_cfg.DATASETS.TEST[0]}: {box.get('AP', float('nan')):.1f}", flush=True)
    return cached


def whole_image_demo(args, cfg, name):
    """The trained pose model with a synthetic person detector on whole val images (no ground-truth
    boxes): keypoint AP on synthetic_pose_val_mini, and drawn predictions of a few images."""
    from detectron2.data import DatasetCatalog

    import train_net
    from detectron2.engine import default_argument_parser

    weights = person_detector(args)
    detector_opts = ["MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", os.path.join(ROOT, "configs/Detectors/synthetic_person_faster_rcnn.yaml"),
                     "MODEL.TOPDOWN.DETECTOR.WEIGHTS", weights]
    pose_weights = os.path.join(args.output_dir, "model_final.pth")
    opts = list(args.opts) + detector_opts + ["MODEL.WEIGHTS", pose_weights, "DATASETS.TEST", "('synthetic_pose_val_mini',)",
                                              "OUTPUT_DIR", os.path.join(args.output_dir, "whole_images")]
    d2_args = default_argument_parser().parse_args(["--config-file", args.config_file, "--eval-only"] + opts)
    eval_cfg = train_net.setup(d2_args)
    model = train_net.Trainer.build_model(eval_cfg)
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model).load(pose_weights)
    results = train_net.Trainer.test(eval_cfg, model)
    ap = results["synthetic_pose_val_mini"]["keypoints"]["AP"] if "synthetic_pose_val_mini" in results else \
        results["keypoints"]["AP"]
    files = [r["file_name"] for r in DatasetCatalog.get(name)[: args.num_images]]
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = os.path.join(args.output_dir, "whole_images", "vis")
    summary = demo.main(["--config-file", args.config_file, "--input", *files, "--output", out, "--json",
                         os.path.join(out, "predictions.json"), "--overwrite", "--opts"]
                        + list(args.opts) + detector_opts + ["MODEL.WEIGHTS", pose_weights])
    print(f"\nWhole images, people found by the synthetic person detector: keypoint AP {ap:.2f} on "
          f"synthetic_pose_val_mini; {len(summary['written'])} drawn images of {name} in {out}")
    return ap


if __name__ == "__main__":
    main()
