"""The shipped configs as package data, as Detectron2's model zoo offers its own:

    from d2pose import model_zoo
    cfg.merge_from_file(model_zoo.get_config_file("RLE/synthetic_rle_topdown.yaml"))

so that scripts outside the repository need no path to it. A config is named "<folder>/<file>.yaml":
a method's configs live in its own folder, `projects/<Method>/configs/` (named "<Method>/<file>.yaml"),
the shared bases, baselines and detectors in `configs/`; `configs/<Method>/` keeps one-line redirects
to the moved files. Installing mirrors that layout into the package (`d2pose/model_zoo/configs` and
`d2pose/model_zoo/projects/<Method>/configs`, links to the repository's folders in a source tree), so
that the configs' relative `_BASE_`s resolve there as they do in the repository.
"""
import glob
import os
from typing import Dict, List, Optional

__all__ = ["get_config_file", "list_configs", "CONFIG_ROOT"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))

#: where the configs are in an installed package: its mirror of configs/ (with projects/ beside it)
CONFIG_ROOT = os.path.join(_HERE, "configs")


def _method_folders(root: str) -> Dict[str, str]:
    """{method: its config folder} for every projects/<Method>/configs under `root`."""
    folders = glob.glob(os.path.join(root, "projects", "*", "configs"))
    return {os.path.basename(os.path.dirname(f)): f for f in folders if os.path.isdir(f)}


def _root() -> str:
    """The folder that holds configs/ and projects/<Method>/configs/: the repository in a source tree
    (an editable install), else the package's mirror of it."""
    for root in (_REPO, _HERE):
        if os.path.isdir(os.path.join(root, "configs")) and _method_folders(root):
            return root
    raise FileNotFoundError(f"d2pose's configs are not installed (looked in {_HERE} and {_REPO})")


def list_configs() -> List[str]:
    """Every shipped config once, by name (e.g. "Poseur/poseur_R_50_256x192_coco.yaml"); the
    redirects in configs/<Method>/ name the same configs as projects/<Method>/configs/."""
    root = _root()
    shared = os.path.join(root, "configs")
    found = set()
    for folder, _, files in os.walk(shared):
        found |= {os.path.relpath(os.path.join(folder, f), shared) for f in files if f.endswith(".yaml")}
    for method, folder in _method_folders(root).items():
        found |= {f"{method}/{os.path.basename(p)}" for p in glob.glob(os.path.join(folder, "*.yaml"))}
    return sorted(found)


def _method_file(root: str, config_path: str) -> Optional[str]:
    """The file of a "<Method>/<file>.yaml" name in projects/<Method>/configs/, if it is there."""
    method, _, name = config_path.replace(os.sep, "/").partition("/")
    folder = _method_folders(root).get(method)
    path = os.path.join(folder, name) if folder and name else None
    return path if path and os.path.isfile(path) else None


def get_config_file(config_path: str) -> str:
    """The absolute path of a shipped config, e.g. get_config_file("RLE/synthetic_rle_topdown.yaml")
    (a method's config is its file in projects/<Method>/configs/, not the redirect in configs/);
    a name that is not shipped is an error listing the configs of that folder."""
    root = _root()
    path = _method_file(root, config_path) or os.path.join(root, "configs", config_path)
    if not os.path.isfile(path):
        folder = os.path.dirname(config_path)
        near = [c for c in list_configs() if os.path.dirname(c) == folder] or list_configs()
        raise FileNotFoundError(f"{config_path!r} is not a d2pose config; shipped: {', '.join(near)}")
    return path
