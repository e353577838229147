"""d2pose: human pose estimation for Detectron2.

`import d2pose` registers every d2pose component into Detectron2's registries (meta-architectures,
backbones, heads, ROI heads, datasets, codecs, converters) from the core (`d2pose/`) and from every
method package (`projects/<Method>/d2pose_<method>/`, imported through `d2pose.projects`);
`d2pose.add_d2pose_config(cfg)` adds every d2pose config key. It also restricts Detectron2's
checkpoint reading to data (`d2pose.checkpoint.safe_load`: no pickled code runs when weights load)
and makes Detectron2's `DefaultPredictor` refuse a `MODEL.WEIGHTS` that does not fit the model
(`d2pose.checkpoint.strict`), writes checkpoints atomically (`d2pose.checkpoint.atomic`), and
makes a d2pose config merged without `add_d2pose_config` say so.
"""
__version__ = "0.2.0"

from . import data, evaluation, layers, modeling  # noqa: F401  (registering modules)
from . import projects  # noqa: F401,E402  (the method packages: RLE, Poseur)
from .checkpoint.atomic import install_atomic_saving
from .checkpoint.safe_load import install_safe_checkpoint_loading
from .checkpoint.strict import install_strict_loading
from .config import add_d2pose_config, get_d2pose_cfg, install_config_hint

install_safe_checkpoint_loading()
install_atomic_saving()
install_strict_loading()
install_config_hint()

__all__ = ["add_d2pose_config", "get_d2pose_cfg", "layers", "__version__"]
