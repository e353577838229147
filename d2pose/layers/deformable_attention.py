"""Deformable attention modules: MSDeformAttn (Deformable-DETR) and EMSDA (Poseur).

`MSDeformAttn` follows Deformable-DETR (Zhu et al., ICLR 2021, Sec. 4.1, Eq. 3): the value is
projected and split into heads, then each head samples it at P points per level around the
reference point. `EMSDA` is Poseur's efficient multi-scale deformable attention (Mao et al.,
ECCV 2022, Sec. 3.3): the value projection moves after sampling, so the full C-channel feature is
sampled once per head (without materialising per-head copies) and projected C -> C/M per head.

Shape shorthand:
    N: batch, Lq: queries, S: value tokens, C: channels, M: heads, D = C / M, L: levels, P: points.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .ms_deform_attn import BACKENDS, ms_deform_attn, ms_deform_attn_shared

__all__ = ["MSDeformAttn", "EMSDA", "sampling_locations_from_offsets"]


def sampling_locations_from_offsets(
    reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor
) -> torch.Tensor:
    """Sampling locations from reference points and predicted offsets (Deformable-DETR Eq. 3).

    Args:
        reference_points: (N, Lq, 2) or (N, Lq, L, 2) normalised (x, y); or (N, Lq, L, 4) boxes
            (cx, cy, w, h), for which offsets are scaled by half the box size over P.
        offsets: (N, Lq, M, L, P, 2) in pixels of each level.
        spatial_shapes: (L, 2) int64 (H, W).

    Returns:
        (N, Lq, M, L, P, 2) normalised (x, y).
    """
    if reference_points.dim() == 3:  # (N, Lq, 2): the same point on every level
        reference_points = reference_points.unsqueeze(2)
    last = reference_points.shape[-1]
    if last == 2:
        # (W, H) per level to normalise pixel offsets: (L, 2) -> (1, 1, 1, L, 1, 2)
        normalizer = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(offsets)
        return reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    if last == 4:
        P = offsets.shape[4]
        centre = reference_points[:, :, None, :, None, :2]
        size = reference_points[:, :, None, :, None, 2:]
        return centre + offsets / P * size * 0.5
    raise ValueError(f"reference_points must end in 2 (points) or 4 (boxes), got shape {tuple(reference_points.shape)}")


class _DeformableSampling(nn.Module):
    """Predicts per-head sampling offsets and attention weights from the queries; `forward` runs the
    attention, and a subclass's `_attend` samples the value and projects the result."""

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_points: int, backend: str,
                 offset_scales: Optional[Sequence[float]] = None):
        super().__init__()
        offset_scales = tuple(float(x) for x in (offset_scales if offset_scales is not None else [1.0] * num_levels))
        if len(offset_scales) != num_levels or min(offset_scales) <= 0:
            raise ValueError(f"offset_scales {list(offset_scales)} must hold {num_levels} positive values, one per level")
        self.offset_scales = offset_scales
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)

    def _reset_sampling(self) -> None:
        """Deformable-DETR init: zero weights; offset bias points each head in its own direction,
        scaled by the point index + 1 (in cells of each level), times `offset_scales[l]` on level l
        (1 everywhere: Deformable-DETR's; stride_0 / stride_l: k + 1 cells of the finest level on
        every level, the same ring in the image); uniform attention."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = grid * torch.tensor(self.offset_scales, dtype=torch.float32).view(1, -1, 1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)

    def sampling(
        self, query: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns sampling locations (N, Lq, M, L, P, 2) and attention weights (N, Lq, M, L, P)."""
        N, Lq, _ = query.shape
        M, L, P = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape[0] != L:
            raise ValueError(f"spatial_shapes has {spatial_shapes.shape[0]} levels, the module expects {L}")
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        # softmax over all L * P samples of a head
        attn = F.softmax(self.attention_weights(query).view(N, Lq, M, L * P), -1).view(N, Lq, M, L, P)
        return sampling_locations_from_offsets(reference_points, offsets, spatial_shapes), attn

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_levels={self.num_levels}, "
            f"num_points={self.num_points}, backend={self.backend!r}"
        )

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        return_sampling: bool = False,
    ):
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, 2), (N, Lq, L, 2) or (N, Lq, L, 4), normalised.
            value: (N, S, C) flattened multi-scale features.
            spatial_shapes: (L, 2) int64; level_start_index: (L,) int64.
            padding_mask: (N, S) bool, True at padded tokens.
            return_sampling: also return the sampling locations and attention weights.

        Returns:
            (N, Lq, C); with return_sampling, also (N, Lq, M, L, P, 2) and (N, Lq, M, L, P).
        """
        locations, attn = self.sampling(query, reference_points, spatial_shapes)
        out = self._attend(value, padding_mask, spatial_shapes, level_start_index, locations, attn)
        return (out, locations, attn) if return_sampling else out

    def _attend(self, value: torch.Tensor, padding_mask: Optional[torch.Tensor], spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, locations: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The output (N, Lq, C) from the value (N, S, C) and the sampling of :meth:`sampling`."""
        raise NotImplementedError


def _sample_mixed_precision(op, value: torch.Tensor, spatial_shapes, level_start_index, locations, attn, backend):
    """Runs an MSDA op under autocast: the kernels take one floating dtype for the value, locations and
    weights, and the CPU kernels only float32/float64, so reduced-precision values are sampled in
    float32 on the CPU (on CUDA in the value's dtype, accumulating in float32)."""
    with torch.autocast(value.device.type, enabled=False):
        dtype = value.dtype
        if dtype in (torch.float16, torch.bfloat16) and value.device.type == "cpu":
            dtype = torch.float32
        return op(value.to(dtype), spatial_shapes, level_start_index, locations.to(dtype), attn.to(dtype), backend)


def _mask_value(value: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Zeroes padded tokens. value (N, S, C), padding_mask (N, S) with True at padding."""
    if padding_mask is None:
        return value
    if padding_mask.shape != value.shape[:2]:
        raise ValueError(f"padding_mask must be (N, S) = {tuple(value.shape[:2])}, got {tuple(padding_mask.shape)}")
    return value.masked_fill(padding_mask[..., None], 0.0)


class MSDeformAttn(_DeformableSampling):
    """Multi-scale deformable attention of Deformable-DETR."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        backend: str = "auto",
        offset_scales: Optional[Sequence[float]] = None,
    ):
        """
        Args:
            embed_dim: channels C of queries and values.
            num_heads: heads M.
            num_levels: feature levels L.
            num_points: sampling points P per head and level.
            backend: MSDA backend, see :func:`d2pose.layers.ms_deform_attn`.
            offset_scales: per level, a factor on the initial sampling offsets (None: 1 each,
                Deformable-DETR's init).
        """
        super().__init__(embed_dim, num_heads, num_levels, num_points, backend, offset_scales)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_sampling()
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.constant_(proj.bias, 0.0)

    def _attend(self, value: torch.Tensor, padding_mask: Optional[torch.Tensor], spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, locations: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Projects the value, splits it into heads (N, S, M, D), samples it and projects the output."""
        N, S, C = value.shape
        v = _mask_value(self.value_proj(value), padding_mask).view(N, S, self.num_heads, C // self.num_heads)
        return self.output_proj(
            _sample_mixed_precision(ms_deform_attn, v, spatial_shapes, level_start_index, locations, attn, self.backend))


class EMSDA(_DeformableSampling):
    """Poseur's efficient multi-scale deformable attention: sample, then project per head."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        backend: str = "auto",
        init: str = "deformable",
        offset_scales: Optional[Sequence[float]] = None,
    ):
        """
        Args:
            embed_dim, num_heads, num_levels, num_points, backend, offset_scales: as in :class:`MSDeformAttn`.
            init: "deformable" (Deformable-DETR's init, the default) or "official" (Poseur's code,
                which re-initialises every matrix with xavier after the deformable init, leaving
                only the direction bias of the sampling offsets).
        """
        super().__init__(embed_dim, num_heads, num_levels, num_points, backend, offset_scales)
        if init not in ("deformable", "official"):
            raise ValueError(f"init must be 'deformable' or 'official', got {init!r}")
        head_dim = embed_dim // num_heads
        # per-head value projection C -> C/M, applied after sampling
        self.value_proj_weight = nn.Parameter(torch.empty(num_heads, embed_dim, head_dim))
        self.value_proj_bias = nn.Parameter(torch.empty(num_heads, head_dim))
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_sampling()
        C = self.embed_dim
        # the same distribution as xavier on one C -> C value projection
        bound = math.sqrt(6.0 / (C + C))
        nn.init.uniform_(self.value_proj_weight, -bound, bound)
        nn.init.constant_(self.value_proj_bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)
        if self.init == "official":
            nn.init.xavier_uniform_(self.sampling_offsets.weight)
            nn.init.xavier_uniform_(self.attention_weights.weight)
            # official layout: an (M * C, C / M) embedding table
            nn.init.xavier_uniform_(self.value_proj_weight.data.view(-1, self.value_proj_weight.shape[-1]))

    def project(self, sampled: torch.Tensor) -> torch.Tensor:
        """Per-head value projection of sampled features (N, Lq, M, C) -> (N, Lq, C)."""
        N, Lq, M, C = sampled.shape
        out = torch.einsum("nqmc,mcd->nqmd", sampled, self.value_proj_weight) + self.value_proj_bias
        return out.reshape(N, Lq, C)  # concatenate the heads

    def _attend(self, value: torch.Tensor, padding_mask: Optional[torch.Tensor], spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, locations: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Samples the value (N, S, C) without a projection, then projects per head and outputs."""
        sampled = _sample_mixed_precision(ms_deform_attn_shared, _mask_value(value, padding_mask), spatial_shapes,
                                          level_start_index, locations, attn, self.backend)
        return self.output_proj(self.project(sampled))
