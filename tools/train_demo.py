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
"""
from d2pose.engine.train_demo import main

if __name__ == "__main__":
    main()
