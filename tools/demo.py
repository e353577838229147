#!/usr/bin/env python
"""The main job on built-in data: train the flagship, Poseur top-down, on the synthetic benchmark on
the CPU, evaluate it with d2pose's KeypointEvaluator, print the AP table, draw predictions next to
the ground truth and, for Poseur, the decoder's reference and sampling points (for TransPose, the
dependency areas of a person's keypoints).

    python tools/demo.py [--config-file configs/Poseur/synthetic_poseur_topdown.yaml] [--iters 600]
                         [--time-budget 5] [--output-dir output/demo] [--num-vis 8] [KEY VALUE ...]

The schedule is shortened so the demo stays quick on any CPU: at most --iters iterations (600),
and no more than fit --time-budget minutes of training, sized from a measurement of the first
steps on this machine in the precision the policy picks (d2pose.engine.timing; bfloat16 where the
CPU runs it natively, else float32). On two AVX-512 cores with native bfloat16 Poseur runs the 600
iterations in about 4 minutes; on two AVX2 cores in float32 the budget holds about 200. The demo
prints what it chose and why. `--time-budget 0` trains exactly --iters. Train the config as is for
the full result. An existing output folder is not reused silently: pass --resume to continue it,
or choose another --output-dir.
"""
import time
import argparse
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
    return results


if __name__ == "__main__":
    main()
