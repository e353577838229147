"""A machine without CUDA: MODEL.DEVICE "cuda" (Detectron2's default, kept by the COCO configs) falls back
to the CPU with one warning naming MODEL.DEVICE wherever d2pose sets a config up (`setup`, so
`train_net.py --eval-only`; `PosePredictor`; Detectron2's `DefaultPredictor` with the safeguards), and
`--num-gpus N` there says that it runs N CPU processes. CUDA is reported absent (monkeypatched) so that
the tests read the same on a GPU machine."""
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor

from d2pose.checkpoint import PoseCheckpointer
from d2pose.config import cpu_fallback, get_d2pose_cfg, resolve_device
from d2pose.engine import PosePredictor, Trainer, parse_args, setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RLE_COCO = os.path.join(ROOT, "projects/RLE/configs/rle_R_50_256x192_coco.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


class _Records(logging.Handler):
    """The messages logged to the "d2pose" logger while it is attached."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def d2pose_log():
    handler = _Records()
    logger = logging.getLogger("d2pose")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def _device_warnings(messages):
    return [m for m in messages if "MODEL.DEVICE" in m and "no CUDA device" in m]


def test_cpu_fallback(no_cuda):
    cfg = get_d2pose_cfg()
    assert cfg.MODEL.DEVICE == "cuda"
    cfg.freeze()
    message = cpu_fallback(cfg)
    assert cfg.MODEL.DEVICE == "cpu" and cfg.is_frozen()
    assert "MODEL.DEVICE is 'cuda'" in message and "MODEL.DEVICE cpu" in message
    assert cpu_fallback(cfg) is None  # "cpu" is kept, and so is any device that names no CUDA
    cfg.defrost()
    cfg.MODEL.DEVICE = "cuda:1"
    assert resolve_device(cfg) == "cpu"


def test_cuda_is_kept_where_it_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = get_d2pose_cfg()
    assert cpu_fallback(cfg) is None and cfg.MODEL.DEVICE == "cuda"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A checkpoint of RLE's COCO model as tools/convert_checkpoint.py writes one ({"model": state_dict})."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(RLE_COCO)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    path = tmp_path_factory.mktemp("converted") / "rle_R_50_d2pose.pth"
    torch.save({"model": Trainer.build_model(cfg).state_dict()}, path)
    return str(path)


def test_eval_only_of_a_coco_config_on_the_cpu(no_cuda, converted, tmp_path, d2pose_log):
    """`train_net.py --eval-only` of a COCO config with a converted checkpoint, up to the evaluation: the
    config says "cpu" (one warning naming MODEL.DEVICE), the model loads the weights strictly and predicts,
    and so do DefaultPredictor and PosePredictor on the same config."""
    args = parse_args(["--config-file", RLE_COCO, "--eval-only", "MODEL.WEIGHTS", converted,
                       "OUTPUT_DIR", str(tmp_path)])
    cfg = setup(args)
    assert cfg.MODEL.DEVICE == "cpu" and cfg.is_frozen()
    assert len(_device_warnings(d2pose_log)) == 1, d2pose_log
    model = Trainer.build_model(cfg)
    PoseCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
    assert next(model.parameters()).device.type == "cpu"
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    for predictor_class in (DefaultPredictor, PosePredictor):
        raw = cfg.clone()
        raw.defrost()
        raw.MODEL.DEVICE = "cuda"  # a user's config as merged from the file, before setup()
        predictor = predictor_class(raw)
        assert predictor.cfg.MODEL.DEVICE == "cpu" and raw.MODEL.DEVICE == "cuda"  # the caller's cfg unchanged
        inst = predictor(image)["instances"]
        assert inst.image_size == (64, 48) and inst.pred_keypoints.shape == (1, 17, 3)
    assert len(_device_warnings(d2pose_log)) == 3


def test_num_gpus_without_cuda_says_it_runs_cpu_processes(no_cuda, tmp_path, d2pose_log):
    args = parse_args(["--config-file", RLE_COCO, "--num-gpus", "2", "OUTPUT_DIR", str(tmp_path)])
    cfg = setup(args)
    assert cfg.MODEL.DEVICE == "cpu"
    assert any("--num-gpus 2 on a machine without CUDA: 2 CPU processes (Gloo backend)" in m for m in d2pose_log)
