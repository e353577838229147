"""The shipped configs as package data, as Detectron2's model zoo offers its own:

    from d2pose import model_zoo
    cfg.merge_from_file(model_zoo.get_config_file("RLE/synthetic_rle_topdown.yaml"))

so that scripts outside the repository need no path to it. Installing builds `configs/` into the
package (`d2pose/model_zoo/configs`, a link to the repository's `configs/` in a source tree).
"""
import os
from typing import List

__all__ = ["get_config_file", "list_configs", "CONFIG_ROOT"]

#: where the configs are: inside the package when installed, else the repository's configs/
CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _root() -> str:
    for root in (CONFIG_ROOT, _REPO_CONFIGS):
        if os.path.isdir(root):
            return root
    raise FileNotFoundError(f"d2pose's configs are not installed (looked in {CONFIG_ROOT} and {_REPO_CONFIGS})")


def list_configs() -> List[str]:
    """Every shipped config, relative to the config root (e.g. "Poseur/poseur_R_50_256x192_coco.yaml")."""
    root = _root()
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith(".yaml")]
    return sorted(found)


def get_config_file(config_path: str) -> str:
    """The absolute path of a shipped config, e.g. get_config_file("RLE/synthetic_rle_topdown.yaml");
    a name that is not shipped is an error listing the configs of that folder."""
    root = _root()
    path = os.path.join(root, config_path)
    if not os.path.isfile(path):
        folder = os.path.dirname(config_path)
        near = [c for c in list_configs() if os.path.dirname(c) == folder] or list_configs()
        raise FileNotFoundError(f"{config_path!r} is not a d2pose config; shipped: {', '.join(near)}")
    return path
