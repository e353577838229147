"""Unreadable images in a dataset: training goes on, evaluation says what it could not score.

A missing image or a truncated / corrupt file would otherwise fail the first batch that meets it
(mid-run on a large set) with an error that names no file (PIL: "image file is truncated").

* Training: :class:`SkipUnreadableImages` wraps a mapper; an image that cannot be read (any OSError:
  missing, truncated, not an image) is skipped with a warning naming the file and the running count,
  and Detectron2's dataset wrapper draws another sample in its place.
* Evaluation: :func:`drop_missing_images` removes records whose file does not exist, with one
  warning that counts and names them (the evaluator then scores the rest: their ground truth is not
  counted as missed); a file that exists but cannot be decoded raises an error naming it.
"""
import logging
import os
from typing import Dict, List

__all__ = ["SkipUnreadableImages", "drop_missing_images"]

logger = logging.getLogger("d2pose")


class SkipUnreadableImages:
    """mapper(record) or None (skip) when the record's image cannot be read; see the module docstring.
    With `skip=False` (evaluation) the error is raised again, naming the file."""

    def __init__(self, mapper, max_warnings: int = 20, skip: bool = True):
        self.mapper = mapper
        self.skip = skip
        self.skipped = 0
        self.max_warnings = max_warnings

    def __call__(self, record: Dict):
        try:
            return self.mapper(record)
        except OSError as e:
            if not self.skip:
                raise OSError(f"image {record.get('file_name')} cannot be read ({type(e).__name__}: {e})") from e
            self.skipped += 1
            if self.skipped <= self.max_warnings:
                logger.warning("skipping image %s: it cannot be read (%s: %s); %d image(s) skipped so far",
                               record.get("file_name"), type(e).__name__, e, self.skipped)
            return None


def drop_missing_images(dicts: List[Dict], dataset_name: str) -> List[Dict]:
    """`dicts` without the records whose image file does not exist (one warning naming them)."""
    missing = [r.get("file_name") for r in dicts if r.get("file_name") and not os.path.exists(r["file_name"])]
    if not missing:
        return dicts
    shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
    logger.warning("dataset %r: %d of %d images are missing and are not evaluated (their people are not "
                   "counted): %s", dataset_name, len(missing), len(dicts), shown)
    gone = set(missing)
    return [r for r in dicts if r.get("file_name") not in gone]
