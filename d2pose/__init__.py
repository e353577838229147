"""d2pose: human pose estimation for Detectron2.

`import d2pose` registers every d2pose component into Detectron2's registries (meta-architectures,
backbones, heads, ROI heads, datasets, codecs, converters) from the core (`d2pose/`) and from every
method package (`projects/<Method>/d2pose_<method>/`, imported here and nowhere else in the core);
`d2pose.add_d2pose_config(cfg)` adds every d2pose config key. It also installs d2pose's safeguards
into Detectron2's own classes (`d2pose.install_safeguards()`, every change listed in
`d2pose.safeguards`: checkpoints read as data and written atomically, `DefaultPredictor` refusing
weights that do not fit the model, a hint for a config merged without `add_d2pose_config`) unless
the environment variable `D2POSE_NO_SAFEGUARDS=1` is set; `d2pose.uninstall_safeguards()` undoes them.
"""
__version__ = "0.2.0"

from . import codecs, data, evaluation, layers, modeling  # noqa: F401  (registering modules)
# the method packages (projects/<Method>/d2pose_<method>/): they register their components, converters
# and config keys (`d2pose.config.CONFIG_ADDERS`); the only place where the core imports them
import d2pose_rle  # noqa: F401,E402
import d2pose_poseur  # noqa: F401,E402
import d2pose_transpose  # noqa: F401,E402
import d2pose_logocap  # noqa: F401,E402
from .config import add_d2pose_config, get_d2pose_cfg
from .safeguards import disabled_by_environment, install_safeguards, uninstall_safeguards

if not disabled_by_environment():
    install_safeguards()

__all__ = ["add_d2pose_config", "get_d2pose_cfg", "install_safeguards", "layers", "uninstall_safeguards",
           "__version__"]
