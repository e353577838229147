"""Checkpoints are written atomically: a run killed while saving leaves the previous file whole.

fvcore's `Checkpointer.save` (which Detectron2's checkpointers and the periodic-checkpoint hook use)
writes `model_XXXX.pth` and `last_checkpoint` in place, so a SIGKILL or a full disk mid-write leaves
a truncated file that the next `--resume` tries to read. :func:`atomic_write` (the library's one
atomic writer, `d2pose.utils.io`) writes through a temporary file in the same folder, flushed to disk
and renamed over the target (`os.replace`, atomic on POSIX and Windows);
`d2pose.checkpoint.PoseCheckpointer` saves through it (and, with `d2pose.install_safeguards()`,
Detectron2's `DetectionCheckpointer` too).
"""
from ..utils.io import atomic_write

__all__ = ["atomic_write"]
