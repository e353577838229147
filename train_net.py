#!/usr/bin/env python
"""d2pose training and evaluation launcher: Detectron2's standard `train_net.py`.

    python train_net.py --config-file configs/X.yaml --num-gpus 8 [KEY VALUE ...]
    python train_net.py --config-file configs/X.yaml --eval-only MODEL.WEIGHTS model.pth

Importing d2pose registers every d2pose component (meta-architectures, backbones, ROI heads,
datasets) so that any config can name them. The trainer, its hooks and the launcher's checks live in
`d2pose.engine` (`Trainer`, `setup`, `main`); `d2pose.engine.launcher` says how runs are kept from
replacing each other (`--resume`, `--overwrite`, `--eval-only`'s own output folder).
"""
import logging

from detectron2.engine import launch

from d2pose.engine import Trainer, main, parse_args, setup  # noqa: F401  (also importable from here)

if __name__ == "__main__":
    args = parse_args()
    logging.getLogger("d2pose").info("Command line arguments: %s", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
