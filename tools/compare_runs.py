#!/usr/bin/env python
"""Prints what finished train_net.py runs cost and reached, one table row per output folder
(d2pose.engine.runs): iterations, training minutes (the trainer's "Overall training speed" line) and
the last evaluation's keypoint AP, AP50, AP75, AR.

    python tools/compare_runs.py output/comparisons/logocap output/comparisons/rcnn_heatmap_equal_time \
        [--names LOGO-CAP "Keypoint R-CNN"] [--task keypoints]
"""
import argparse
from typing import List, Optional

from d2pose.engine.runs import format_runs, run_summary
from d2pose.utils.machine import cpu_capability, cpu_model


def main(argv: Optional[List[str]] = None) -> List[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dirs", nargs="+")
    p.add_argument("--names", nargs="*", default=[], help="row names (default: the folders)")
    p.add_argument("--task", default="keypoints")
    args = p.parse_args(argv)
    lines = format_runs([run_summary(d) for d in args.output_dirs], args.names, args.task)
    print(f"machine: {cpu_model()}, CPU capability {cpu_capability()}")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
