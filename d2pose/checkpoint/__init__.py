"""Conversion of the authors' official checkpoints (RLE, Poseur) into d2pose models."""
from .convert import (
    CONVERTERS,
    convert_poseur_official,
    convert_rle_official,
    load_official_checkpoint,
    read_checkpoint,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
