#!/usr/bin/env python
"""The main job on built-in data (`make demo`; `d2pose.engine.train_demo`, --help for the details):
train Poseur top-down on the synthetic benchmark on the CPU within a time budget, evaluate it, draw
its predictions and its decoder's samples, then run it on whole images behind a synthetic person
detector.

    python tools/train_demo.py [--config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml] [--iters 600]
                               [--time-budget 5] [--output-dir output/demo] [--num-vis 8]
                               [--detector-budget 2] [--num-images 6] [KEY VALUE ...]
"""
from d2pose.engine.train_demo import main

if __name__ == "__main__":
    main()
