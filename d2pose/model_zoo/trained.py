"""Small trained models shipped with the package, as Detectron2's model zoo ships URLs of its own:

    from d2pose import model_zoo
    model = model_zoo.get("TransPose/synthetic_transpose_r_short.yaml", trained=True)   # eval mode
    cfg.MODEL.WEIGHTS = model_zoo.get_checkpoint_url("TransPose/synthetic_transpose_r_short.yaml")
    # = "d2pose://TransPose/synthetic_transpose_r_short.yaml", which MODEL.WEIGHTS, the person
    # detector's MODEL.TOPDOWN.DETECTOR.WEIGHTS and Detectron2's PathManager resolve to the file

The files live in `d2pose/model_zoo/trained/` beside `MODELS.json`, which records for each config
name its file, sha256, the recipe and schedule that produced it and the AP it reached; they are
float16 state_dicts (`{"model": ...}`, loadable with `torch.load(weights_only=True)`; loading
casts them to the model's float32). `python tools/train_model_zoo.py` regenerates them
(d2pose.engine.zoo).

Importing d2pose registers the `d2pose://` prefix with Detectron2's PathManager (iopath's handler
registry, the extension point Detectron2 itself uses for `detectron2://`); no class is changed.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from ..checkpoint import PoseCheckpointer
from ..config import get_d2pose_cfg
from ..config.device import cpu_fallback
from .config_files import get_config_file

__all__ = ["TRAINED_DIR", "MANIFEST", "PREFIX", "trained_models", "get_checkpoint_url", "get_weights_file",
           "file_digest", "get_config", "get", "ZooHandler"]

#: the folder of the shipped weights and of MODELS.json
TRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trained")
MANIFEST = os.path.join(TRAINED_DIR, "MODELS.json")
#: MODEL.WEIGHTS prefix of a shipped model: "d2pose://<config name>"
PREFIX = "d2pose://"


def trained_models() -> Dict[str, Dict[str, Any]]:
    """{config name: its record in MODELS.json} ({} when no model is shipped)."""
    if not os.path.isfile(MANIFEST):
        return {}
    with open(MANIFEST) as f:
        return json.load(f)


def _record(config_path: str) -> Dict[str, Any]:
    name = config_path[len(PREFIX):] if config_path.startswith(PREFIX) else config_path
    models = trained_models()
    if name not in models:
        raise FileNotFoundError(f"{name!r} has no shipped trained model (d2pose.model_zoo ships: "
                                f"{', '.join(sorted(models)) or 'none'}; {MANIFEST})")
    return models[name]


def get_checkpoint_url(config_path: str) -> str:
    """The MODEL.WEIGHTS value of a shipped model, "d2pose://<config name>" (Detectron2's naming)."""
    _record(config_path)
    return PREFIX + config_path


def get_weights_file(config_path: str) -> str:
    """The local file of the shipped model of `config_path` (a config name or a d2pose:// URL)."""
    path = os.path.join(TRAINED_DIR, _record(config_path)["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} (the shipped model of {config_path!r}) is missing from the package")
    return path


def file_digest(path: str) -> str:
    """sha256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_config(config_path: str, trained: bool = False, opts: Optional[List[str]] = None) -> CfgNode:
    """d2pose's config of a shipped config name (+ KEY VALUE `opts`); `trained`: MODEL.WEIGHTS is the
    shipped model."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(get_config_file(config_path))
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
    cfg.merge_from_list(list(opts or []))
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None) -> torch.nn.Module:
    """The model of a shipped config in eval mode (Detectron2's `model_zoo.get`); `trained`: with the
    shipped weights, loaded strictly (every tensor must fit)."""
    cfg = get_config(config_path, trained=trained)
    if device is not None:
        cfg.MODEL.DEVICE = device
    else:
        cpu_fallback(cfg)  # quietly, as Detectron2's model_zoo.get
    model = build_model(cfg)
    if trained:
        PoseCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
    return model.eval()


class ZooHandler(PathHandler):
    """iopath handler of "d2pose://<config name>": the shipped weights file of that config."""

    PREFIX = PREFIX

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        return get_weights_file(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any):
        return open(self._get_local_path(path), mode, buffering)

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        try:
            return os.path.isfile(get_weights_file(path))
        except FileNotFoundError:
            return False

    def _exists(self, path: str, **kwargs: Any) -> bool:
        return self._isfile(path)


def register_zoo_handler() -> None:
    """Registers `ZooHandler` with Detectron2's PathManager once."""
    if PREFIX not in getattr(PathManager, "_path_handlers", {}):
        PathManager.register_handler(ZooHandler())


register_zoo_handler()
