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

import warnings

# Two libraries d2pose imports warn at every import about their own code, not about anything a user
# can change: fvcore.nn (imported by Detectron2's layers) scripts two focal losses with
# `torch.jit.script`, which PyTorch deprecates with a FutureWarning each, and Detectron2's model_zoo
# imports the deprecated `pkg_resources`. They are imported here first with exactly these warnings
# silenced, for these imports only (the filters are restored afterwards; later imports are cached).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning)
    import fvcore.nn  # noqa: F401,E402
    import detectron2.model_zoo  # noqa: F401,E402

from . import codecs, data, evaluation, layers, modeling  # noqa: F401,E402  (registering modules)
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
