"""Poseur (Mao et al., ECCV 2022): reusable parts of its top-down head: sine embeddings, the neck,
the keypoint encoder and the query decoder with EMSDA cross-attention. The registered head is
`d2pose.modeling.heads.poseur.PoseurHead`."""
from .decoder import (
    KeypointEncoder,
    PoseurDecoder,
    PoseurDecoderLayer,
    group_attention_mask,
    inverse_sigmoid,
    noisy_reference_points,
)
from .neck import ChannelMapper
from .position_encoding import coord_sine_embedding, multiscale_memory, sine_position_encoding_2d

__all__ = [
    "ChannelMapper",
    "KeypointEncoder",
    "PoseurDecoder",
    "PoseurDecoderLayer",
    "coord_sine_embedding",
    "group_attention_mask",
    "inverse_sigmoid",
    "multiscale_memory",
    "noisy_reference_points",
    "sine_position_encoding_2d",
]
