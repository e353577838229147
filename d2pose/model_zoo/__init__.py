"""d2pose's model zoo: the shipped configs by name (`get_config_file`, `list_configs`; config_files.py)
and the small trained models shipped with the package (`get`, `get_checkpoint_url`,
`get_weights_file`, `trained_models`; trained.py), as Detectron2's `detectron2.model_zoo`:

    from d2pose import model_zoo
    cfg.merge_from_file(model_zoo.get_config_file("RLE/synthetic_rle_topdown.yaml"))
    model = model_zoo.get("TransPose/synthetic_transpose_r_short.yaml", trained=True)
"""
from .config_files import CONFIG_ROOT, get_config_file, list_configs
from .trained import (MANIFEST, PREFIX, TRAINED_DIR, ZooHandler, file_digest, get, get_checkpoint_url, get_config,
                      get_weights_file, trained_models)

__all__ = ["get_config_file", "list_configs", "CONFIG_ROOT", "get", "get_config", "get_checkpoint_url",
           "get_weights_file", "trained_models", "file_digest", "TRAINED_DIR", "MANIFEST", "PREFIX", "ZooHandler"]
