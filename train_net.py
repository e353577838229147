#!/usr/bin/env python
"""d2pose training and evaluation launcher: Detectron2's standard `train_net.py`.

    python train_net.py --config-file configs/X.yaml --num-gpus 8 [KEY VALUE ...]
    python train_net.py --config-file configs/X.yaml --eval-only MODEL.WEIGHTS model.pth

Importing d2pose registers every d2pose component (meta-architectures, backbones, ROI heads,
datasets) so that any config can name them.
"""
import logging
import os
from collections import OrderedDict

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

import d2pose  # noqa: F401  (registers every d2pose component)
from d2pose.config import add_d2pose_config
from d2pose.engine import precision_trainer, training_precision
from d2pose.modeling import build_model
from d2pose.data.build import build_pose_test_loader, build_pose_train_loader
from d2pose.solver import build_optimizer


class Trainer(DefaultTrainer):
    """DefaultTrainer with d2pose's data pipelines, optimizers and evaluators."""

    def __init__(self, cfg):
        training_precision(cfg)  # contradicting precision keys fail here, before anything is built
        super().__init__(cfg)
        # SOLVER.AUTOCAST_DTYPE ("auto": bfloat16 on CPUs that run it natively, else float32; on
        # CUDA SOLVER.AMP.ENABLED decides): same model, loader and optimizer, the loop that fits
        self._trainer = precision_trainer(self._trainer, cfg)

    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)  # Detectron2's builder + MODEL.CHANNELS_LAST
        logging.getLogger("d2pose").info("Model:\n%s", model)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_pose_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_pose_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        from d2pose.evaluation import build_evaluator

        return build_evaluator(cfg, dataset_name, output_folder)


def setup(args):
    """Config from d2pose's keys, the YAML file and the command-line overrides."""
    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # d2pose's own messages (precision choice, lr multipliers, data checks) into the same log.txt
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="d2pose", abbrev_name="d2pose")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    logging.getLogger("d2pose").info("Command line arguments: %s", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
