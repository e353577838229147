"""Fixed sine-cosine position encodings shared by the transformer methods (Poseur, TransPose).

`sine_position_encoding_2d` is the DETR encoding of every cell of a feature map (added to Poseur's
memory, and TransPose's 2-D sine embedding of its tokens; `token_position_encoding` is its cached,
flattened form); `coord_sine_embedding` embeds arbitrary
normalised points, as Deformable-DETR's two-stage proposals and Poseur's keypoint encoder do
(supplement Sec. 7); `multiscale_memory` flattens multi-scale maps into a deformable-attention
memory with per-level encodings and learned level embeddings.

Both use, per axis, F = num_feats frequencies temperature^(2 floor(i / 2) / F), i = 0 .. F-1, and
interleave sin (even i) and cos (odd i) as in DETR.

Shape shorthand: N images, H x W map, F frequencies per axis.
"""
import functools
import math
from typing import List, Tuple

import torch

__all__ = ["sine_position_encoding_2d", "token_position_encoding", "coord_sine_embedding", "multiscale_memory"]


def _frequencies(num_feats: int, temperature: float, device, dtype) -> torch.Tensor:
    if num_feats % 2 != 0:
        raise ValueError(f"num_feats must be even (sin and cos pairs), got {num_feats}")
    i = torch.arange(num_feats, device=device, dtype=torch.float64)
    return (float(temperature) ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)).to(dtype)


def _interleave(pos: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F): sin of the even channels and cos of the odd ones, interleaved."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_encoding_2d(
    N: int,
    H: int,
    W: int,
    num_feats: int = 128,
    temperature: float = 10000,
    device=None,
    dtype: torch.dtype = torch.float32,
    eps: float = 1e-6,
    offset: float = -0.5,
) -> torch.Tensor:
    """DETR's normalised sine encoding of an unpadded H x W map.

    Row r (1-based) maps to y = (r + offset) / (H + eps) * 2 pi, column c likewise to x. offset -0.5
    is mmcv's `SinePositionalEncoding` (normalize=True, offset=-0.5), the setting of Poseur's code;
    offset 0 is DETR's cumulative-sum form, TransPose's 2-D sine embedding (paper Appendix A, the
    authors' `_make_sine_position_embedding`).

    Args:
        N, H, W: batch and map size.
        num_feats: F, channels per axis (even).
        temperature: base of the frequencies.
        device, dtype: of the result (computed in float32 or float64).
        eps: added to the normaliser, as in mmcv.
        offset: added to the 1-based row / column index before normalising.

    Returns:
        (N, 2F, H, W), channels cat(pos_y, pos_x).
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    dim_t = _frequencies(num_feats, temperature, device, work)
    scale = 2 * math.pi
    y = (torch.arange(1, H + 1, device=device, dtype=work) + offset) / (H + eps) * scale
    x = (torch.arange(1, W + 1, device=device, dtype=work) + offset) / (W + eps) * scale
    pos_y = _interleave(y[:, None] / dim_t)  # (H, F)
    pos_x = _interleave(x[:, None] / dim_t)  # (W, F)
    pos = torch.cat([pos_y[:, None, :].expand(H, W, num_feats), pos_x[None, :, :].expand(H, W, num_feats)], dim=-1)
    return pos.permute(2, 0, 1).unsqueeze(0).expand(N, -1, -1, -1).to(dtype)


def coord_sine_embedding(
    coords: torch.Tensor, num_feats: int = 128, temperature: float = 10000, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine embedding of normalised points (Deformable-DETR's `get_proposal_pos_embed` without its
    sigmoid: the points are already in [0, 1]; values outside are embedded as they are).

    Args:
        coords: (..., 2) points (x, y), nominally in [0, 1].
        num_feats: F, channels per axis (even).
        temperature: base of the frequencies.
        scale: multiplier of the coordinates (2 pi maps [0, 1] to one period of the lowest frequency).

    Returns:
        (..., 2F) in the dtype of `coords`, channels cat(pos_x, pos_y) (the order of Poseur's and
        Deformable-DETR's code; DETR's map encoding above puts y first).
    """
    dim_t = _frequencies(num_feats, temperature, coords.device, coords.dtype)
    pos = coords[..., None] * scale / dim_t  # (..., 2, F)
    return _interleave(pos).flatten(-2)


# constant encodings, made on first use and kept in small LRU caches (per size, device and dtype)
_CACHE_SIZE = 16


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _token_position_encoding(H: int, W: int, C: int, device: str, dtype: torch.dtype,
                             offset: float = -0.5) -> torch.Tensor:
    """(1, H W, C) flattened sine encoding: a constant, and recomputing it for the 4,080 tokens of a
    256x192 crop cost ~15% of Poseur's head on a CPU."""
    pos = sine_position_encoding_2d(1, H, W, C // 2, device=device, dtype=dtype, offset=offset)
    return pos.flatten(2).transpose(1, 2).contiguous()


def token_position_encoding(H: int, W: int, C: int, device=None, dtype: torch.dtype = torch.float32,
                            offset: float = -0.5) -> torch.Tensor:
    """The (1, H W, C) sine encoding of an H x W map's tokens in row-major order (cached per size,
    device, dtype and offset; a constant: do not modify it in place). See
    :func:`sine_position_encoding_2d` for `offset`."""
    return _token_position_encoding(int(H), int(W), int(C), str(device or "cpu"), dtype, float(offset))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _memory_position_encoding(shapes: Tuple[Tuple[int, int], ...], C: int, device: str, dtype) -> torch.Tensor:
    """(1, S, C) sine encodings of all levels, concatenated."""
    return torch.cat([_token_position_encoding(H, W, C, device, dtype) for H, W in shapes], 1)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _memory_encoding_with_embeds(shapes, C: int, device: str, dtype, level_embeds: torch.Tensor, version: int):
    """The level encodings plus each level's embedding, for inference; `version` (the parameter's
    count of in-place updates, e.g. by loading) keys the cache so that new weights give a new sum."""
    sizes = [H * W for H, W in shapes]
    embeds = torch.cat([level_embeds[l].detach().to(dtype).expand(n, C) for l, n in enumerate(sizes)])[None]
    return _memory_position_encoding(shapes, C, device, dtype) + embeds


def multiscale_memory(maps: List[torch.Tensor], level_embeds: torch.Tensor):
    """Multi-scale maps [(N, C, H_l, W_l)] -> the decoder's memory.

    The tokens are written once into a contiguous (N, S, C) buffer (from any memory layout of the
    maps) and the encodings are added in place: summing the transposed token views directly ran on
    mismatched strides and cost ~15% of Poseur's head on a CPU.

    Returns:
        memory (N, S, C) = tokens + 2-D sine encoding + the level's learned embedding
        (level_embeds (L, C)), spatial_shapes (L, 2) int64 (H, W) and level_start_index (L,).
    """
    N, C = maps[0].shape[:2]
    shapes = tuple((int(m.shape[2]), int(m.shape[3])) for m in maps)
    sizes = [H * W for H, W in shapes]
    memory = maps[0].new_empty(N, sum(sizes), C)
    start = 0
    for m, n in zip(maps, sizes):
        # one strided copy per level (for NCHW maps a transposition, which PyTorch parallelises over
        # the intra-op threads; per-image 2-D transposes measured slower on 2 threads)
        memory[:, start:start + n].copy_(m.flatten(2).transpose(1, 2))
        start += n
    device = str(memory.device)
    if torch.is_grad_enabled() and level_embeds.requires_grad:
        memory.add_(_memory_position_encoding(shapes, C, device, memory.dtype))
        start = 0
        for l, n in enumerate(sizes):
            memory[:, start:start + n].add_(level_embeds[l].to(memory.dtype))
            start += n
    else:
        # inference: one pass with sine encodings + level embeddings summed once, cached until the
        # embeddings change
        memory.add_(_memory_encoding_with_embeds(shapes, C, device, memory.dtype, level_embeds, level_embeds._version))
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=maps[0].device)
    starts = [0]
    for n in sizes[:-1]:
        starts.append(starts[-1] + n)
    level_start_index = torch.as_tensor(starts, dtype=torch.long, device=maps[0].device)
    return memory, spatial_shapes, level_start_index
