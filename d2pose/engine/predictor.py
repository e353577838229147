"""`PosePredictor`: Detectron2's `DefaultPredictor` that loads MODEL.WEIGHTS with d2pose's checkpointer,
strictly: a missing file is named with its config key, a checkpoint that leaves tensors of the model
unset (or holds others) is refused, and no pickled code runs."""
import logging

import detectron2.data.transforms as T
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor

from ..checkpoint import PoseCheckpointer, check_weights_file
from ..modeling.build import build_model

__all__ = ["PosePredictor"]

logger = logging.getLogger("d2pose")


class PosePredictor(DefaultPredictor):
    """DefaultPredictor (one BGR (H, W, 3) image in, the model's output for it out) whose weights must fit.

    An empty MODEL.WEIGHTS gives an untrained model (tests, export) with a warning.
    """

    def __init__(self, cfg):
        check_weights_file(cfg.MODEL.WEIGHTS)
        # DefaultPredictor.__init__ with PoseCheckpointer(strict=True)
        self.cfg = cfg.clone()  # cfg can be modified by model
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        if not cfg.MODEL.WEIGHTS:
            logger.warning("PosePredictor: MODEL.WEIGHTS is empty, the model is untrained (random weights)")
        PoseCheckpointer(self.model, strict=True).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format
