#!/usr/bin/env python
"""The main job on built-in data (`make demo`; `d2pose.engine.train_demo`, --help for the details):
first the trained models shipped with the package (TransPose-R behind the shipped person detector)
on whole synthetic val images, their AP beside the recorded one and their drawings; then a short
run of Poseur top-down trained on the CPU within the time left, its loss and AP over iterations
plotted against the shipped model's AP, its predictions and its decoder's samples drawn; then where
everything is.

    python tools/train_demo.py [--config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml] [--iters 600]
                               [--total-budget 9] [--time-budget 5] [--output-dir output/demo] [--num-vis 8]
                               [--num-images 6] [--skip-shipped] [KEY VALUE ...]

Config overrides: KEY VALUE pairs at the end, or anywhere after --opts (d2pose.engine.cli).
"""
from typing import Any, Dict, List, Optional

from d2pose.engine import train_demo
from d2pose.engine.cli import overrides_last


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Runs the demo as the command line says (`d2pose.engine.train_demo.main`)."""
    return train_demo.main(overrides_last(argv))


if __name__ == "__main__":
    main()
