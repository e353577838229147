"""Layers and compiled operators shared by every d2pose method."""
from .deformable_attention import EMSDA, MSDeformAttn, sampling_locations_from_offsets
from .normalized_linear import NormalizedLinear
from .position_encoding import coord_sine_embedding, multiscale_memory, sine_position_encoding_2d, token_position_encoding
from .ms_deform_attn import (
    compiled_backends,
    ms_deform_attn,
    ms_deform_attn_shared,
    ms_deform_attn_shared_torch,
    ms_deform_attn_torch,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
