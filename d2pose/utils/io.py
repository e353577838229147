"""Atomic file writing: a file is replaced whole or not at all, so a process killed mid-write (SIGKILL,
a full disk) leaves the previous file, never a truncated one. Used for checkpoints
(`d2pose.checkpoint`), converted checkpoints (`tools/convert_checkpoint.py`) and the synthetic dataset.
"""
import os
from typing import IO, Callable

__all__ = ["atomic_write"]


def atomic_write(path: str, write: Callable[[IO], object], mode: str = "wb", fsync: bool = True) -> None:
    """Calls write(file) on a temporary file next to `path` and renames it to `path` (`os.replace`,
    atomic on POSIX and Windows); the temporary file is removed when anything fails.

    Args:
        path: the file to write (its folder must exist).
        write: writes the content into the open file it is given.
        mode: "wb" for bytes, "w" for text.
        fsync: flush the file to disk before the rename, so that it survives a power loss too; False
            for many small files that can be regenerated (the rename is atomic either way).
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
