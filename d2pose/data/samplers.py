"""A training sampler that resumes where a run stopped, and per-sample seeded augmentation.

`ResumableTrainingSampler` yields the same infinite, seeded stream as Detectron2's `TrainingSampler`
(a new `torch.randperm` per epoch from one generator, each process taking every world_size-th index)
but can start `start` samples into the global stream, so a run restarted with `--resume` at
iteration i continues with the batches the interrupted run would have drawn
(`start = i x SOLVER.IMS_PER_BATCH`; `train_net.Trainer.resume_or_load` sets it). With
`positions=True` it yields (global position, index) pairs for :class:`PositionedMapDataset`.

With `SOLVER.DETERMINISTIC: True`, :class:`PositionedMapDataset` seeds Python's, numpy's and torch's random
number generators from (SEED, the sample's global position) before mapping each sample, so a
sample's augmentation depends on neither the loader worker that maps it nor on whether the run was
resumed.
"""
import itertools
import random
from typing import Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from detectron2.utils import comm

__all__ = ["ResumableTrainingSampler", "PositionedMapDataset"]

class ResumableTrainingSampler(Sampler):
    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None, positions: bool = False):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"ResumableTrainingSampler(size={size!r}): the training set is empty")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()
        self._positions = positions
        self.start = 0  # global samples already consumed (set on resume, before iteration starts)

    def state_dict(self) -> Dict:
        """Saved with the checkpoints (a Detectron2 checkpointable): the stream's seed."""
        return {"seed": self._seed, "size": self._size}

    def load_state_dict(self, state: Dict) -> None:
        if int(state.get("size", self._size)) != self._size:
            raise ValueError(f"the checkpoint's data stream has {state['size']} samples, this training set "
                             f"{self._size}: resuming on another dataset cannot continue its data position")
        self._seed = int(state["seed"])

    def __iter__(self):
        stream = itertools.islice(self._infinite_indices(), self.start, None)
        mine = itertools.islice(enumerate(stream, self.start), self._rank, None, self._world_size)
        if self._positions:
            yield from mine
        else:
            yield from (index for _, index in mine)

    def _infinite_indices(self):
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from torch.arange(self._size).tolist()


class PositionedMapDataset(Dataset):
    """Map-style dataset of `records` through `mapper`, indexed by the (position, index) pairs of a
    `ResumableTrainingSampler(positions=True)`: before mapping, Python's, numpy's and torch's RNGs are
    seeded from (seed, position), so the sample's augmentation is a function of its place in the
    stream alone. A record the mapper skips (None: an unreadable image) is replaced by another one
    chosen from the same seed, as Detectron2's MapDataset retries, but reproducibly."""

    def __init__(self, records, mapper, seed: int, max_retries: int = 100):
        self._records = records
        self._mapper = mapper
        self._seed = int(seed)
        self._max_retries = max_retries

    def __len__(self):
        return len(self._records)

    def _seed_all(self, position: int, attempt: int) -> None:
        s = (self._seed * 1000003 + int(position) * 7919 + attempt * 15485863) % (2**31)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def __getitem__(self, key):
        position, index = key if isinstance(key, tuple) else (10**9 + int(key), int(key))
        for attempt in range(self._max_retries):
            self._seed_all(position, attempt)
            out = self._mapper(dict(self._records[index]))
            if out is not None:
                return out
            index = int(np.random.RandomState((self._seed + position + attempt) % (2**31)).randint(len(self._records)))
        raise RuntimeError(f"{self._max_retries} records in a row could not be mapped (unreadable images?)")
