#!/usr/bin/env python
"""The main job on built-in data: train the flagship, Poseur top-down, on the synthetic benchmark on
the CPU, evaluate it with d2pose's KeypointEvaluator, print the AP table, draw predictions next to
the ground truth and, for Poseur, the decoder's reference and sampling points.

    python tools/demo.py [--config-file configs/Poseur/synthetic_poseur_topdown.yaml] [--iters 600]
                         [--output-dir output/demo] [--num-vis 8] [KEY VALUE ...]

The schedule is shortened (600 iterations, about 4 minutes on 2 cores) so the demo stays quick;
train the config as is for the full result. An existing output folder is not reused silently:
pass --resume to continue it, or choose another --output-dir.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/Poseur/synthetic_poseur_topdown.yaml"))
    parser.add_argument("--iters", type=int, default=600)
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
    steps = f"({int(args.iters * 0.75)},{int(args.iters * 0.9)})"
    opts = ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", steps, "OUTPUT_DIR", args.output_dir,
            "SOLVER.CHECKPOINT_PERIOD", str(args.iters)] + list(args.opts)
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
    return results


if __name__ == "__main__":
    main()
