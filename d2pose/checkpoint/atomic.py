"""Checkpoints are written atomically: a run killed while saving leaves the previous file whole.

fvcore's `Checkpointer.save` (which Detectron2's checkpointers and the periodic-checkpoint hook use)
writes `model_XXXX.pth` and `last_checkpoint` in place, so a SIGKILL or a full disk mid-write leaves
a truncated file that the next `--resume` tries to read. Importing d2pose makes both writes go
through a temporary file in the same folder, flushed to disk and renamed over the target
(`os.replace`, atomic on POSIX and Windows); remote save dirs (URIs) keep fvcore's path.
"""
import os
from typing import Callable

import torch

__all__ = ["atomic_write", "install_atomic_saving"]


def atomic_write(path: str, write: Callable, mode: str = "wb") -> None:
    """write(file) into a temporary file next to `path`, then rename it to `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_INSTALLED = False


def install_atomic_saving() -> None:
    """Patches fvcore's Checkpointer.save / tag_last_checkpoint for local save dirs (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from fvcore.common.checkpoint import Checkpointer

    save, tag = Checkpointer.save, Checkpointer.tag_last_checkpoint

    def local(folder) -> bool:
        return bool(folder) and "://" not in str(folder)

    def atomic_save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk or not local(self.save_dir):
            return save(self, name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def atomic_tag(self, last_filename_basename: str) -> None:
        if not local(self.save_dir):
            return tag(self, last_filename_basename)
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename), "w")

    atomic_save.__doc__ = (save.__doc__ or "") + "\n(d2pose: written atomically for local save dirs.)"
    atomic_tag.__doc__ = (tag.__doc__ or "") + "\n(d2pose: written atomically for local save dirs.)"
    Checkpointer.save, Checkpointer.tag_last_checkpoint = atomic_save, atomic_tag
    _INSTALLED = True
