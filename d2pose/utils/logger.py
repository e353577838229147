"""Logging set up once per process: Detectron2's `setup_logger` without the repeated lines.

Detectron2's `setup_logger` caches its calls by their arguments, so a process that enters it again
with other arguments (another output folder, another `abbrev_name`: the training demo sets up a
training run, an evaluation and the inference demo in turn) adds one more stdout handler each
time, and every later line is printed once per handler. `setup_logger` here calls Detectron2's and
then keeps one stdout handler and one handler per log file on the logger (`drop_duplicate_handlers`);
the logger does not propagate, so nothing reaches the root logger's handlers a second time.

    from d2pose.utils.logger import setup_logger
    logger = setup_logger(output=cfg.OUTPUT_DIR, name="d2pose")     # any number of times
"""
import logging
import os
from typing import Optional

from detectron2.utils.logger import setup_logger as d2_setup_logger

__all__ = ["setup_logger", "drop_duplicate_handlers"]


def _handler_key(handler: logging.Handler) -> Optional[str]:
    """"console" for a plain StreamHandler on a terminal or captured stream, "file:<path>" for one on
    a file (Detectron2's log.txt), None for any other handler (left alone)."""
    if type(handler) is logging.FileHandler:
        return "file:" + os.path.abspath(handler.baseFilename)
    if type(handler) is not logging.StreamHandler:
        return None
    name = getattr(handler.stream, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return "file:" + os.path.abspath(name)
    return "console"


def drop_duplicate_handlers(logger: logging.Logger) -> logging.Logger:
    """Keeps the newest stdout handler of `logger` and one handler per log file; returns the logger."""
    newest = {}
    for handler in logger.handlers:
        key = _handler_key(handler)
        if key is not None:
            newest[key] = handler
    for handler in list(logger.handlers):
        key = _handler_key(handler)
        if key is not None and newest[key] is not handler:
            logger.removeHandler(handler)
    return logger


def setup_logger(output: Optional[str] = None, distributed_rank: int = 0, *, name: str = "d2pose",
                 abbrev_name: Optional[str] = None) -> logging.Logger:
    """Detectron2's `setup_logger` (DEBUG level, coloured stdout on rank 0, `output`'s log.txt),
    idempotent: however often it is entered, each line is printed once and written once per file."""
    logger = d2_setup_logger(output, distributed_rank, name=name, abbrev_name=abbrev_name)
    logger.propagate = False
    return drop_duplicate_handlers(logger)
