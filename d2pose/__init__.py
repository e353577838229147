"""d2pose: human pose estimation for Detectron2.

`import d2pose` registers every d2pose component into Detectron2's registries (meta-architectures,
backbones, heads, ROI heads, datasets, codecs, converters) from the core (`d2pose/`) and from every
method package (`projects/<Method>/d2pose_<method>/`, imported through `d2pose.projects`);
`d2pose.add_d2pose_config(cfg)` adds every d2pose config key.
"""
__version__ = "0.2.0"

from . import data, evaluation, layers, modeling  # noqa: F401  (registering modules)
from . import projects  # noqa: F401,E402  (the method packages: RLE, Poseur)
from .config import add_d2pose_config, get_d2pose_cfg

__all__ = ["add_d2pose_config", "get_d2pose_cfg", "layers", "__version__"]
