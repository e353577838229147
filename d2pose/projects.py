"""The one place where the core meets the method packages (projects/<Method>/d2pose_<method>/):
importing it imports every method, which registers its heads, ROI heads and converters in the
registries, and `add_project_configs(cfg)` adds every method's config keys. `import d2pose` imports
it; nothing else in d2pose imports a method package.

A new method adds its package here (and to setup.py's `PROJECTS`).
"""
import d2pose_logocap
import d2pose_poseur
import d2pose_rle
import d2pose_transpose

__all__ = ["METHOD_PACKAGES", "add_project_configs"]

METHOD_PACKAGES = {"RLE": d2pose_rle, "Poseur": d2pose_poseur, "TransPose": d2pose_transpose,
                   "LOGOCAP": d2pose_logocap}


def add_project_configs(cfg) -> None:
    """Every method's `add_<method>_config(cfg)`, in a fixed order."""
    d2pose_rle.add_rle_config(cfg)
    d2pose_poseur.add_poseur_config(cfg)
    d2pose_transpose.add_transpose_config(cfg)
    d2pose_logocap.add_logocap_config(cfg)
