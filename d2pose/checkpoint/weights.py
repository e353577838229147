"""The check of MODEL.WEIGHTS before a model is built: a local file that does not exist is named with
the config key (and, for the training launcher, the file that set it) instead of failing later in
fvcore's loader; URLs and Detectron2's catalog names are left to Detectron2's path manager."""
import os

__all__ = ["check_weights_file"]

#: prefixes Detectron2's PathManager resolves itself (model zoo, catalog, URLs)
_REMOTE_PREFIXES = ("detectron2://", "catalog://", "http://", "https://", "s3://", "gs://", "manifold://")


def check_weights_file(weights: str, source: str = "") -> None:
    """Raises FileNotFoundError when `weights` (MODEL.WEIGHTS) names a local file that does not exist.

    Args:
        weights: the value of MODEL.WEIGHTS ("" = random initialisation, accepted).
        source: where the value came from (e.g. the config file), quoted in the message.
    """
    if not weights or weights.startswith(_REMOTE_PREFIXES) or "://" in weights:
        return
    if os.path.isfile(weights):
        return
    where = f" (set in {source} or on the command line)" if source else ""
    what = "is a directory, not a checkpoint" if os.path.isdir(weights) else "does not exist"
    raise FileNotFoundError(
        f"MODEL.WEIGHTS {weights!r}{where} {what} (working directory {os.getcwd()}): train the run that writes "
        "it first (a config whose MODEL.WEIGHTS names another run's model_final.pth says which), pass another "
        "checkpoint with MODEL.WEIGHTS path/to/model.pth, or MODEL.WEIGHTS \"\" for random initialisation")
