"""Sample data for the data and codec tests: registration of the real keypoint samples
(../shared/data, the `shared_data` fixture) as datasets, made-up people."""
import os
from typing import Callable

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

from d2pose.data import register_keypoint_dataset


def register_sample(name: str, shared_data: str, json_file: str, image_root: str,
                    register: Callable[..., None] = register_keypoint_dataset, **kwargs) -> str:
    """Registers a sample set as dataset `name` (replacing an earlier registration of that name) and
    returns the name.

    Args:
        name: dataset name.
        shared_data: the samples' folder (the `shared_data` fixture).
        json_file, image_root: the annotations and the images, relative to `shared_data`.
        register: the registering function (e.g. `register_mpii_dataset`), called as
            register(name, json_file, image_root, **kwargs).
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register(name, os.path.join(shared_data, json_file), os.path.join(shared_data, image_root), **kwargs)
    return name


def random_person(rng: np.random.Generator, cx: float, cy: float, size: float = 60.0, K: int = 17) -> np.ndarray:
    """(K, 3) keypoints of a made-up person around (cx, cy): x within size / 2, y within size, all visible."""
    kps = np.zeros((K, 3))
    kps[:, 0] = cx + rng.uniform(-size / 2, size / 2, K)
    kps[:, 1] = cy + rng.uniform(-size, size, K)
    kps[:, 2] = 2
    return kps
