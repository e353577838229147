"""Multi-scale deformable attention (MSDA) and its shared-value variant for EMSDA.

Implements the sampling operator of Deformable-DETR (Zhu et al., ICLR 2021, Sec. 4.1, Eq. 3) and
the variant Poseur's EMSDA needs (Mao et al., ECCV 2022, Sec. 3.3), in which one value tensor is
sampled by every head before the per-head value projection. This file holds the autograd Function
over the compiled kernels (`torch.ops.d2pose.*`, CPU and CUDA), the PyTorch reference built on
`grid_sample` (always available; also the tracing / ONNX path) and the functions that pick one.

Shape shorthand:
    N: batch, S: value tokens (sum over levels of H_l * W_l), M: heads, D: channels per head,
    C: channels of a shared value, Lq: queries, L: levels, P: points per level and head.
"""
import logging
import re
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.function import once_differentiable

__all__ = [
    "ms_deform_attn",
    "ms_deform_attn_shared",
    "ms_deform_attn_torch",
    "ms_deform_attn_shared_torch",
    "compiled_backends",
    "BACKENDS",
]

BACKENDS = ("auto", "cpp", "cuda", "torch")

logger = logging.getLogger(__name__)

_C = None
_C_error: Optional[str] = None
_warned = False


REBUILD_HINT = ("rebuild it against the installed torch: `pip install -e .` in the repository (or `make setup`; "
                "d2pose's build backend compiles against the torch of the environment it installs into)")


def torch_release(version: str) -> str:
    """"2.14.1+cu130" -> "2.14.1", "2.6.0.dev20241001+cpu" -> "2.6.0", "2.4.0a0+3bcc3cd" -> "2.4.0":
    major.minor.patch, what the C++ headers record (TORCH_VERSION_MAJOR/MINOR/PATCH)."""
    found = re.match(r"\d+\.\d+\.\d+", version)
    return found.group(0) if found else version


def check_build(compiled) -> Optional[str]:
    """None when `compiled` (d2pose._C) was built against the running torch, else why not."""
    built = getattr(compiled, "torch_version", None)
    if built is None:
        return f"d2pose._C was built by an older d2pose that does not record its torch version; {REBUILD_HINT}"
    built, running = built(), torch_release(torch.__version__)
    if built != running:
        return f"d2pose._C was compiled against torch {built} but torch {running} is running; {REBUILD_HINT}"
    return None


def _load_compiled():
    """Imports d2pose._C once and checks the torch it was built for; returns it or None (the reason
    is then in _C_error and in the fallback warning)."""
    global _C, _C_error
    if _C is None and _C_error is None:
        try:
            from d2pose import _C as compiled  # noqa: F401  (registers torch.ops.d2pose.*)
        except ImportError as e:  # pragma: no cover - depends on the build
            # a library built for another torch often fails here with an undefined symbol
            _C_error = f"{e} (torch {torch.__version__} is installed; {REBUILD_HINT})"
            return None
        _C_error = check_build(compiled)
        if _C_error is None:
            _C = compiled
    return _C


def compiled_backends() -> tuple:
    """The compiled backends available in this build: a subset of ("cpp", "cuda")."""
    c = _load_compiled()
    if c is None:
        return ()
    return ("cpp", "cuda") if c.has_cuda() else ("cpp",)


def _warn_fallback(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"d2pose: {reason}; multi-scale deformable attention falls back to the PyTorch "
            "reference (slower).",
            RuntimeWarning,
            stacklevel=3,
        )


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"ms_deform_attn: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return "torch"
    available = compiled_backends()
    wanted = "cuda" if device.type == "cuda" else "cpp"
    if backend == "auto":
        if wanted in available:
            return wanted
        if device.type in ("cpu", "cuda"):
            _warn_fallback(
                f"d2pose._C is not available ({_C_error})" if not available else f"d2pose._C was built without {wanted} kernels"
            )
        return "torch"
    if backend != wanted:
        raise ValueError(f"ms_deform_attn: backend {backend!r} cannot run tensors on {device.type}")
    if backend not in available:
        raise RuntimeError(
            f"ms_deform_attn: backend {backend!r} requested but d2pose._C "
            + ("is not built" if not available else f"has no {backend} kernels")
            + (f" ({_C_error})" if _C_error else "")
        )
    return backend


def _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, shared):
    """Validates shapes; errors name the argument at fault. Returns (N, S, Lq, M, L, P)."""
    want = "(N, S, C)" if shared else "(N, S, M, D)"
    if value.dim() != (3 if shared else 4):
        raise ValueError(f"ms_deform_attn: value must be {want}, got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    N, Lq, M, L, P, _ = sampling_locations.shape
    if attention_weights.shape != (N, Lq, M, L, P):
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = {(N, Lq, M, L, P)}, "
            f"got shape {tuple(attention_weights.shape)}"
        )
    if value.shape[0] != N:
        raise ValueError(f"ms_deform_attn: value batch {value.shape[0]} != sampling_locations batch {N}")
    if not shared and value.shape[2] != M:
        raise ValueError(f"ms_deform_attn: value has {value.shape[2]} heads, sampling_locations has {M}")
    if spatial_shapes.shape != (L, 2):
        raise ValueError(f"ms_deform_attn: spatial_shapes must be (L, 2) = {(L, 2)}, got {tuple(spatial_shapes.shape)}")
    if level_start_index.shape != (L,):
        raise ValueError(f"ms_deform_attn: level_start_index must be (L,) = {(L,)}, got {tuple(level_start_index.shape)}")
    if spatial_shapes.dtype != torch.long or level_start_index.dtype != torch.long:
        raise TypeError("ms_deform_attn: spatial_shapes and level_start_index must be int64")
    if not (value.dtype == sampling_locations.dtype == attention_weights.dtype) or not value.is_floating_point():
        raise TypeError(
            "ms_deform_attn: value, sampling_locations and attention_weights must share one floating dtype, got "
            f"{value.dtype}, {sampling_locations.dtype}, {attention_weights.dtype}"
        )
    if spatial_shapes.device.type == "cpu" and not torch.jit.is_tracing():
        total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum()) if L else 0
        if total != value.shape[1]:
            raise ValueError(
                f"ms_deform_attn: spatial_shapes cover {total} tokens but value has S={value.shape[1]}"
            )
    return N, value.shape[1], Lq, M, L, P


class _MSDeformAttnFunction(Function):
    """Autograd over torch.ops.d2pose.ms_deform_attn_{forward,backward}.

    value is (N, S, Mv, D) with Mv = M, or Mv = 1 for a value shared by all heads; returns
    (N, Lq, M, D).
    """

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        out = torch.ops.d2pose.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = torch.ops.d2pose.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
        )
        return grad_value, None, None, grad_loc, grad_attn


def _sample_levels(value_maps, spatial_shapes, sampling_locations):
    """Yields, per level, the bilinear samples of `value_maps[l]` (B, D, H, W) at the grid
    2 * loc - 1 (B, Lq, K, 2): (B, D, Lq, K)."""
    for l, (value_l, loc_l) in enumerate(zip(value_maps, sampling_locations)):
        yield F.grid_sample(value_l, 2 * loc_l - 1, mode="bilinear", padding_mode="zeros", align_corners=False)


def ms_deform_attn_torch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """PyTorch reference of MSDA (grid_sample, bilinear, zero padding, align_corners=False).

    Args:
        value: (N, S, M, D).
        spatial_shapes: (L, 2) int64, (H, W) per level.
        level_start_index: (L,) int64 (unused: the levels are consecutive).
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) in [0, 1].
        attention_weights: (N, Lq, M, L, P).

    Returns:
        (N, Lq, M * D).
    """
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    maps = []
    for (h, w), value_l in zip(spatial_shapes.tolist(), value.split(sizes, dim=1)):
        # (N, H*W, M, D) -> (N, M, D, H*W) -> (N*M, D, H, W)
        maps.append(value_l.permute(0, 2, 3, 1).reshape(N * M, D, int(h), int(w)))
    # (N, Lq, M, L, P, 2) -> per level (N*M, Lq, P, 2)
    locs = sampling_locations.permute(3, 0, 2, 1, 4, 5).reshape(L, N * M, Lq, P, 2)
    sampled = torch.stack(list(_sample_levels(maps, spatial_shapes, locs)), dim=3)  # (N*M, D, Lq, L, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L, P)
    attn = attention_weights.permute(0, 2, 1, 3, 4).reshape(N * M, 1, Lq, L, P)
    out = (sampled * attn).flatten(-2).sum(-1)  # (N*M, D, Lq)
    # (N*M, D, Lq) -> (N, M*D, Lq) -> (N, Lq, M*D)
    return out.view(N, M * D, Lq).transpose(1, 2).contiguous()


def ms_deform_attn_shared_torch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """PyTorch reference of MSDA with one value (N, S, C) shared by all heads -> (N, Lq, M, C).

    Samples each level once for all heads (grid (N, Lq, M*P, 2)), so no per-head copy of the value
    is made.
    """
    N, S, C = value.shape
    _, Lq, M, L, P, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    # (N, H*W, C) -> (N, C, H, W)
    maps = [v.transpose(1, 2).reshape(N, C, int(h), int(w)) for (h, w), v in zip(spatial_shapes.tolist(), value.split(sizes, dim=1))]
    # (N, Lq, M, L, P, 2) -> per level (N, Lq, M*P, 2)
    locs = sampling_locations.permute(3, 0, 1, 2, 4, 5).reshape(L, N, Lq, M * P, 2)
    sampled = torch.stack(list(_sample_levels(maps, spatial_shapes, locs)), dim=3)  # (N, C, Lq, L, M*P)
    sampled = sampled.view(N, C, Lq, L, M, P)
    # (N, Lq, M, L, P) -> (N, 1, Lq, L, M, P)
    attn = attention_weights.permute(0, 1, 3, 2, 4).unsqueeze(1)
    out = (sampled * attn).sum(dim=(3, 5))  # (N, C, Lq, M)
    return out.permute(0, 2, 3, 1).contiguous()


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention with Deformable-DETR's layout and semantics.

    Args:
        value: (N, S, M, D) per-head values of all levels, flattened level by level.
        spatial_shapes: (L, 2) int64, (H, W) of each level.
        level_start_index: (L,) int64, index of each level's first token in S.
        sampling_locations: (N, Lq, M, L, P, 2) as (x, y) in [0, 1] of each level's map; samples
            outside the map read zeros.
        attention_weights: (N, Lq, M, L, P).
        backend: "cpp", "cuda", "torch" (grid_sample reference) or "auto" (compiled when built,
            else the reference with one warning).

    Returns:
        (N, Lq, M * D).
    """
    return _run(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend, shared=False)


def ms_deform_attn_shared(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """MSDA in which one value tensor is sampled by all M heads (EMSDA's sampling step).

    Equivalent to `ms_deform_attn(value[:, :, None].expand(-1, -1, M, -1), ...)` without
    materialising M copies of the value (Poseur's official code repeats it 8x).

    Args:
        value: (N, S, C).
        spatial_shapes, level_start_index, sampling_locations, attention_weights, backend:
            as in :func:`ms_deform_attn`.

    Returns:
        (N, Lq, M, C): each head's sample of the full C-channel value.
    """
    return _run(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend, shared=True)


def _run(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend: str,
         shared: bool) -> torch.Tensor:
    """The body of :func:`ms_deform_attn` (`shared=False`) and :func:`ms_deform_attn_shared`: checks
    the inputs, then runs the reference or the compiled op. Returns (N, Lq, M * D), or (N, Lq, M, C)
    when shared."""
    N, S, Lq, M, L, P = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, shared=shared
    )
    D = value.shape[-1]  # channels per head; all C channels of a shared value
    out_shape = (N, Lq, M, D) if shared else (N, Lq, M * D)
    if backend_used(backend, value) == "torch":
        if Lq == 0 or N == 0:  # zeros that still reach the inputs in the autograd graph
            return value.new_zeros(out_shape) + 0 * value.sum() + 0 * sampling_locations.sum()
        reference = ms_deform_attn_shared_torch if shared else ms_deform_attn_torch
        return reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    # a shared value (N, S, C) -> (N, S, 1, C): a single value head read by every head
    out = _MSDeformAttnFunction.apply(
        value.unsqueeze(2) if shared else value, spatial_shapes, level_start_index, sampling_locations,
        attention_weights
    )
    return out.view(out_shape)  # (N, Lq, M, D) -> out_shape


def backend_used(backend: str, value: torch.Tensor) -> str:
    """The backend `ms_deform_attn(..., backend=backend)` runs for a value on this device."""
    return _resolve_backend(backend, value.device)
