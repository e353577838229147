"""Logging set up again and again in one process (the training demo enters the launcher's setup for
each run, then the inference demo): every line is printed once and written once per log file."""
import logging
import os

from d2pose.engine import demo
from d2pose.engine.launcher import parse_args, setup
from d2pose.utils.logger import setup_logger

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml")


def test_each_line_printed_once(tmp_path, capsys):
    runs = [tmp_path / f"run{i}" for i in range(3)]
    for run in runs:  # three runs set up in one process, as tools/train_demo.py does
        setup(parse_args(["--config-file", CONFIG, "OUTPUT_DIR", str(run)]))
    setup_logger(name="d2pose")  # what the inference demo and the tools call
    demo.setup_logger(name="d2pose")
    capsys.readouterr()
    logging.getLogger("d2pose.test").info("the d2pose message")
    logging.getLogger("detectron2.test").info("the detectron2 message")
    out = capsys.readouterr()
    printed = out.out + out.err
    assert printed.count("the d2pose message") == 1 and printed.count("the detectron2 message") == 1, printed
    log = (runs[-1] / "log.txt").read_text()
    assert log.count("the d2pose message") == 1 and log.count("the detectron2 message") == 1


def test_other_handlers_are_left_alone(tmp_path):
    logger = logging.getLogger("d2pose_test_handlers")
    custom = logging.NullHandler()
    logger.addHandler(custom)
    try:
        for _ in range(3):
            setup_logger(str(tmp_path / "log.txt"), name="d2pose_test_handlers")
        kinds = sorted(type(h).__name__ for h in logger.handlers)
        assert kinds == ["NullHandler", "StreamHandler", "StreamHandler"]  # stdout, log.txt, the custom one
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
