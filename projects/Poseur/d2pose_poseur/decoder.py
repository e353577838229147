"""Poseur's keypoint encoder and query decoder (Mao et al., ECCV 2022, Sec. 3.1 and 3.3).

Keypoint encoder: each keypoint query is built from a reference point (the coarse proposal mu_f, or
one of its noisy copies in training). Its content is LayerNorm(Linear(cat(e(p), e(clip(p, 0, 1)))))
with e the coordinate sine embedding (the authors' code); its positional part is the keypoint's
class embedding Q_c. The paper writes the initial query as Q_z = Q_c + mu_f*; here, as in
Deformable-DETR decoders, the class embedding is the positional query added to queries and keys of
the self-attention and to the query that predicts EMSDA's offsets and weights, so the sum Q_z is
what those projections see.

Query decoder: post-norm layers self-attention -> EMSDA cross-attention -> FFN. Self-attention is
grouped: with G groups of K queries (the coarse group and, in training, the noisy groups), a query
only sees its own group. After layer l the reference point is refined,
    ref_{l+1} = sigmoid(reg_l(h_l) + inverse_sigmoid(ref_l)),
not detached (the authors' code), and layer l predicts
    mu_l = ref_{l+1} [+ out_l(h_l)],   sigma_l = sigmoid(Linear(h_l)),
where out_l is the authors' extra coordinate branch (`fc_coord_output_branches`, optional here,
zero-initialised so that mu_l starts at ref_{l+1}).

Checkpoint names: the class embedding is `pos_embed` and the query projection `pos_trans` /
`pos_trans_norm` (the official transformer's names); branches are `fc_coord_branches`,
`fc_coord_output_branches` and `fc_sigma_branches`. The authors' sigma branch stacks three linear
layers without activations (`sigma_branch="stacked"`, their parametrisation and init); d2pose's
default is one Linear (`"linear"`), into which the converter can fold theirs exactly
(W = W3 W2 W1, b = W3 (W2 b1 + b2) + b3): the same function, trained differently (gradient steps on
a product of matrices are not steps on the product).

Initialisation (`init`): "d2pose" ends every coordinate MLP in a zero layer (mu_l starts at the
reference point) and starts sigma at 0.5; "official" reproduces the authors' code, whose
`init_weights` loop never reaches the branches' Linear layers (it iterates over the Sequentials):
the coordinate MLPs keep PyTorch's default Linear init, drawn once and copied to every layer's
refinement and output branch (their `_get_clones`), the sigma branches likewise (default init, the
last layer xavier with gain 0.01), EMSDA gets xavier on every matrix, its per-head value bias
(an Embedding there) included (their transformer's `init_weights`), and the FFN biases PyTorch's
default.

Shape shorthand: R instances (crops or ROIs), K keypoints, G groups, Q = G * K queries per
instance, C channels, S memory tokens, L levels, M heads, P points, N_img images (memory rows).
"""
import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch import nn
from torch.nn import functional as F

from d2pose.layers import EMSDA, coord_sine_embedding

__all__ = [
    "inverse_sigmoid",
    "group_attention_mask",
    "noisy_reference_points",
    "KeypointEncoder",
    "PoseurDecoderLayer",
    "PoseurDecoder",
]


_ALL_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION]

def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) of x clamped to [eps, 1 - eps] (torch.logit; mmdet's form clamps x and
    1 - x separately, which differs only below eps, by at most eps)."""
    return torch.logit(x, eps=eps)


def group_attention_mask(num_keypoints: int, num_groups: int, device=None) -> torch.Tensor:
    """Self-attention mask (G*K, G*K), True where attention is blocked: queries of group g (the
    consecutive slots g*K .. g*K+K-1) only see their own group. Boolean masks follow
    `nn.MultiheadAttention` (True = not allowed)."""
    group = torch.div(torch.arange(num_groups * num_keypoints, device=device), num_keypoints, rounding_mode="floor")
    return group[:, None] != group[None, :]


def noisy_reference_points(
    coarse: torch.Tensor,
    num_noisy_groups: int = 3,
    num_noisy: int = 12,
    std: float = 0.2 ** 0.5,
    generator: Optional[torch.Generator] = None,
    clip: Tuple[float, float] = (-0.7, 1.7),
    slots: str = "batch",
) -> torch.Tensor:
    """Poseur's noisy reference points sampling (Sec. 3.1), training only, as the authors' code draws
    them.

    Group 0 is the (detached) coarse proposal. The G noisy groups are copies of it in which
    `num_noisy` distinct slots of the G*K are moved by N(0, 0.2 I) noise (covariance 0.2: standard
    deviation sqrt(0.2) = 0.447 per coordinate, the default `std`), clipped to [-1, 1]. With
    `slots="batch"` (the authors') one random slot set is drawn per call, i.e. per batch, and shared
    by every instance (each instance still gets its own noise values); `slots="instance"` draws a
    slot set per instance. Finally every point is clipped to `clip`: the authors clip the moved
    points; the coarse group is clipped too here, which changes it only where it lies more than 0.7
    crop widths outside the crop, where the decoder's sampling sees nothing either way.

    Args:
        coarse: (R, K, 2) normalised coarse points.
        num_noisy_groups: G.
        num_noisy: slots moved (at most G*K).
        std: standard deviation of the noise per coordinate.
        generator: optional torch.Generator on coarse's device.
        clip: final range of all points.
        slots: "batch" or "instance", see above.

    Returns:
        (R, (1 + G) * K, 2).
    """
    if slots not in ("batch", "instance"):
        raise ValueError(f"slots must be 'batch' or 'instance' (MODEL.POSEUR.NOISE_SLOTS), got {slots!r}")
    coarse = coarse.detach()
    R, K, _ = coarse.shape
    G = int(num_noisy_groups)
    if G <= 0:
        return coarse.clamp(*clip)
    total = G * K
    n = min(int(num_noisy), total)
    copies = coarse.repeat(1, G, 1)  # (R, G*K, 2)
    if n > 0 and R > 0:
        draws = R if slots == "instance" else 1
        order = torch.rand(draws, total, generator=generator, device=coarse.device).argsort(dim=1)
        chosen = order[:, :n, None].expand(R, n, 2)  # n distinct slots (the same for all with "batch")
        noise = torch.randn(R, n, 2, generator=generator, device=coarse.device).to(coarse.dtype)
        noise = (noise * std).clamp(-1.0, 1.0)
        copies = copies + torch.zeros_like(copies).scatter(1, chosen, noise)
    return torch.cat([coarse, copies], dim=1).clamp(*clip)


def default_linear_bias_(linear: nn.Linear) -> None:
    """PyTorch's default Linear bias init, U(-1 / sqrt(fan_in), 1 / sqrt(fan_in)), in place."""
    bound = 1.0 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0.0
    nn.init.uniform_(linear.bias, -bound, bound)


class KeypointEncoder(nn.Module):
    """Reference points (R, G*K, 2) -> query content and positional query, both (R, G*K, C)."""

    def __init__(self, num_keypoints: int, embed_dim: int = 256, temperature: float = 10000, init: str = "d2pose"):
        """
        Args:
            num_keypoints: K (one class embedding per keypoint, shared by all groups).
            embed_dim: C (divisible by 4: C / 2 sine channels per axis, in sin / cos pairs).
            temperature: of the coordinate sine embedding.
            init: "d2pose" (zero projection bias) or "official" (PyTorch's default bias, the authors').
        """
        super().__init__()
        if embed_dim % 4 != 0:
            raise ValueError(f"embed_dim must be divisible by 4, got {embed_dim}")
        self.num_keypoints = num_keypoints
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.pos_trans = nn.Linear(2 * embed_dim, embed_dim)
        self.pos_trans_norm = nn.LayerNorm(embed_dim)
        self.pos_embed = nn.Embedding(num_keypoints, embed_dim)  # class embedding Q_c
        nn.init.xavier_uniform_(self.pos_trans.weight)
        if init == "official":
            default_linear_bias_(self.pos_trans)
        else:
            nn.init.zeros_(self.pos_trans.bias)
        nn.init.xavier_uniform_(self.pos_embed.weight)  # the authors' code: xavier on every matrix

    def forward(self, reference_points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        R, Q, _ = reference_points.shape
        K = self.num_keypoints
        if Q % K != 0:
            raise ValueError(f"the number of reference points ({Q}) must be a multiple of K = {K}")
        F_ = self.embed_dim // 2
        emb = torch.cat([
            coord_sine_embedding(reference_points, F_, self.temperature),
            coord_sine_embedding(reference_points.clamp(0, 1), F_, self.temperature),
        ], dim=-1)  # (R, Q, 2C)
        query = self.pos_trans_norm(self.pos_trans(emb))
        query_pos = self.pos_embed.weight.repeat(Q // K, 1)[None].expand(R, -1, -1)
        return query, query_pos


def _image_batching(memory_index: torch.Tensor, num_images: int) -> Tuple[torch.Tensor, int]:
    """Rank of every instance among the instances of its image (R,), and the largest count."""
    one_hot = F.one_hot(memory_index, num_images)  # (R, N_img)
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
    largest = int(one_hot.sum(0).max()) if memory_index.numel() else 0
    return rank, largest


class PoseurDecoderLayer(nn.Module):
    """One post-norm decoder layer: grouped self-attention, EMSDA cross-attention, FFN (ReLU)."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        num_levels: int = 4,
        num_points: int = 4,
        backend: str = "auto",
        emsda_init: str = "deformable",
        offset_scales: Optional[Sequence[float]] = None,
    ):
        """
        Args:
            embed_dim: C.
            num_heads: M, of the self-attention and of EMSDA.
            ffn_dim: hidden width of the FFN.
            dropout: after self-attention weights and outputs, EMSDA outputs and in the FFN.
            num_levels, num_points: EMSDA's L and P.
            backend: MSDA backend (see :func:`d2pose.layers.ms_deform_attn`).
            emsda_init: EMSDA's "deformable" or "official" init ("official" also gives the FFN's
                biases PyTorch's default init, as the authors' mmcv FFN).
            offset_scales: per level, the factor on EMSDA's initial sampling offsets (see
                :class:`d2pose.layers.EMSDA`; None = Deformable-DETR's).
        """
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn = EMSDA(embed_dim, num_heads, num_levels, num_points, backend=backend, init=emsda_init,
                                offset_scales=offset_scales)
        self.dropout2 = nn.Dropout(dropout)  # mmcv's deformable attention drops its output too
        self.norm2 = nn.LayerNorm(embed_dim)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(embed_dim)
        for fc in (self.linear1, self.linear2, self.self_attn.out_proj):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        if emsda_init == "official":  # the authors' FFN (mmcv's) keeps PyTorch's default biases
            for fc in (self.linear1, self.linear2):
                default_linear_bias_(fc)

    def _self_attention(self, qk: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """`self.self_attn(qk, qk, v)` (nn.MultiheadAttention's parameters and semantics, including a
        boolean or additive (T, T) mask) with one projection of qk for queries and keys and a direct
        scaled_dot_product_attention call: the decoder's sequences are 17-68 tokens long, so the
        module's per-call overhead was a sizeable part of its CPU latency."""
        attn = self.self_attn
        B, T, C = qk.shape
        M = attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q, k = F.linear(qk, w[:2 * C], b[:2 * C]).view(B, T, 2, M, C // M).permute(2, 0, 3, 1, 4)
        v = F.linear(v, w[2 * C:], b[2 * C:]).view(B, T, M, C // M).transpose(1, 2)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # nn.MultiheadAttention: True = blocked; SDPA: True = allowed
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=attn.dropout if self.training else 0.0)
        return attn.out_proj(out.transpose(1, 2).reshape(B, T, C))

    def cross_attention(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        memory_index: Optional[torch.Tensor] = None,
        memory_padding_mask: Optional[torch.Tensor] = None,
        return_sampling: bool = False,
    ):
        """EMSDA of queries (R, Q, C) at reference points (R, Q, 2) into memory.

        Without `memory_index`, memory is (R, S, C), one row per instance. With it, memory is
        (N_img, S, C) and instance r reads row memory_index[r]: the instances of each image are
        padded into one batch row of max_count * Q queries (queries are independent in EMSDA, so
        the padding only costs compute) and one EMSDA call serves all images.
        """
        if memory_index is None:
            return self.cross_attn(query, reference_points, memory, spatial_shapes, level_start_index,
                                   memory_padding_mask, return_sampling=return_sampling)
        R, Q, C = query.shape
        N = memory.shape[0]
        rank, largest = _image_batching(memory_index, N)
        where = (memory_index, rank)
        q = query.new_zeros(N, largest, Q, C).index_put(where, query).view(N, largest * Q, C)
        ref = reference_points.new_zeros(N, largest, Q, 2).index_put(where, reference_points).view(N, largest * Q, 2)
        out = self.cross_attn(q, ref, memory, spatial_shapes, level_start_index, memory_padding_mask,
                              return_sampling=return_sampling)
        if not return_sampling:
            return out.view(N, largest, Q, C)[where]
        out, loc, attn = out
        return (out.view(N, largest, Q, C)[where], loc.view(N, largest, Q, *loc.shape[2:])[where],
                attn.view(N, largest, Q, *attn.shape[2:])[where])

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        memory_index: Optional[torch.Tensor] = None,
        memory_padding_mask: Optional[torch.Tensor] = None,
        return_sampling: bool = False,
        num_groups: int = 1,
    ):
        """
        Args:
            tgt: (R, Q, C) query content.
            query_pos: (R, Q, C) positional query (class embeddings).
            reference_points: (R, Q, 2) normalised (x, y) in crop units (may leave [0, 1]).
            memory: (R, S, C), or (N_img, S, C) with `memory_index`.
            spatial_shapes: (L, 2) int64 (H, W); level_start_index: (L,) int64.
            attn_mask: (Q, Q) bool, True where self-attention is blocked (see group_attention_mask).
            memory_index: optional (R,) int64 memory row of each instance.
            memory_padding_mask: optional (rows of memory, S) bool, True at padding.
            return_sampling: also return EMSDA's sampling locations (R, Q, M, L, P, 2) and
                attention weights (R, Q, M, L, P).
            num_groups: the Q queries form this many consecutive groups that attend only within
                themselves: self-attention then runs on (R G, Q / G, C), which equals the block-diagonal
                group_attention_mask exactly and costs G times less.

        Returns:
            (R, Q, C); with return_sampling, (out, locations, weights).
        """
        q = tgt + query_pos
        R, Q, C = tgt.shape
        # PyTorch's CPU flash-attention kernel is ~6x slower than the math path on sequences this short
        # (17-68 queries; measured fwd+bwd in bfloat16): pick the math path on the CPU
        backends = [SDPBackend.MATH] if tgt.device.type == "cpu" else _ALL_SDPA_BACKENDS
        if Q % num_groups:
            raise ValueError(f"{Q} queries do not split into {num_groups} groups")
        with sdpa_kernel(backends):
            sa = self._self_attention(q.reshape(R * num_groups, Q // num_groups, C),
                                      tgt.reshape(R * num_groups, Q // num_groups, C), attn_mask).reshape(R, Q, C)
        tgt = self.norm1(tgt + self.dropout1(sa))
        ca = self.cross_attention(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                                  memory_index, memory_padding_mask, return_sampling)
        if return_sampling:
            ca, loc, attn = ca
        tgt = self.norm2(tgt + self.dropout2(ca))
        ffn = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        tgt = self.norm3(tgt + self.dropout4(ffn))
        return (tgt, loc, attn) if return_sampling else tgt


def _mlp(embed_dim: int, hidden_layers: int, out_dim: int = 2, zero_last: bool = True) -> nn.Sequential:
    """hidden_layers x (Linear C -> C, ReLU), then Linear C -> out_dim, the last one zero-initialised
    unless `zero_last` is False (PyTorch's default init everywhere, the authors')."""
    layers: List[nn.Module] = []
    for _ in range(hidden_layers):
        layers += [nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(embed_dim, out_dim))
    if zero_last:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


#: values of PoseurDecoder's `sigma_branch` and `init` (MODEL.POSEUR.SIGMA_BRANCH / INIT)
SIGMA_BRANCHES = ("linear", "stacked")
INITS = ("d2pose", "official")


def _sigma_branch(embed_dim: int, hidden_layers: int, kind: str) -> nn.Module:
    """The per-layer sigma branch (its output goes through a sigmoid), PyTorch's default init:
    "linear" is one Linear C -> 2; "stacked" is `hidden_layers` Linear C -> C without activation, then
    Linear C -> 2 (the authors'), as an nn.Sequential. See :func:`_init_sigma_branch`."""
    if kind == "linear":
        return nn.Linear(embed_dim, 2)
    return nn.Sequential(*[nn.Linear(embed_dim, embed_dim) for _ in range(hidden_layers)], nn.Linear(embed_dim, 2))


def _init_sigma_branch(branch: nn.Module, init: str) -> None:
    """The last Linear of a sigma branch: xavier with gain 0.01 (sigma starts near 0.5) and a zero
    bias ("d2pose") or PyTorch's default bias ("official"); hidden layers keep the default init."""
    last = branch[-1] if isinstance(branch, nn.Sequential) else branch
    nn.init.xavier_uniform_(last.weight, gain=0.01)
    if init != "official":
        nn.init.zeros_(last.bias)


class PoseurDecoder(nn.Module):
    """Stack of decoder layers with iterative reference-point refinement and per-layer (mu, sigma)."""

    def __init__(
        self,
        num_layers: int,
        num_keypoints: int,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        num_levels: int = 4,
        num_points: int = 4,
        backend: str = "auto",
        emsda_init: str = "deformable",
        num_reg_fcs: int = 1,
        output_delta: bool = True,
        offset_scales: Optional[Sequence[float]] = None,
        sigma_branch: str = "linear",
        init: str = "d2pose",
    ):
        """
        Args:
            num_layers: decoder layers (6; 3 in the paper's ablations).
            num_keypoints: K; queries come in groups of K.
            embed_dim, num_heads, ffn_dim, dropout, num_levels, num_points, backend, emsda_init,
                offset_scales: see :class:`PoseurDecoderLayer`.
            num_reg_fcs: hidden C -> C layers (ReLU) of the coordinate branches: 1 gives the MLP
                C-C-2; the authors' code uses 2 (C-C-C-2).
            output_delta: add the authors' second coordinate branch (same shape as reg_l) to each
                layer's output mu_l (it does not move the reference points).
            sigma_branch: "linear" (one Linear C -> 2) or "stacked" (the authors': num_reg_fcs
                Linear C -> C without activation, then C -> 2); see the module docstring.
            init: "d2pose" or "official" (the authors' init, EMSDA's included: it overrides
                `emsda_init`); see the module docstring.
        """
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if sigma_branch not in SIGMA_BRANCHES:
            raise ValueError(f"sigma_branch (MODEL.POSEUR.SIGMA_BRANCH) must be one of {SIGMA_BRANCHES}, "
                             f"got {sigma_branch!r}")
        if init not in INITS:
            raise ValueError(f"init (MODEL.POSEUR.INIT) must be one of {INITS}, got {init!r}")
        self.num_keypoints = num_keypoints
        official = init == "official"
        if official:
            emsda_init = "official"
        self.layers = nn.ModuleList([
            PoseurDecoderLayer(embed_dim, num_heads, ffn_dim, dropout, num_levels, num_points, backend, emsda_init,
                               offset_scales)
            for _ in range(num_layers)
        ])
        if official:
            for layer in self.layers:  # their per-head bias is an Embedding(M, C / M): a matrix, so xavier too
                nn.init.xavier_uniform_(layer.cross_attn.value_proj_bias)
            # one draw, copied to every branch (the authors' _get_clones of one module)
            coord = _mlp(embed_dim, num_reg_fcs, zero_last=False)
            sigma = _sigma_branch(embed_dim, num_reg_fcs, sigma_branch)
            _init_sigma_branch(sigma, init)
            make_coord, make_sigma = (lambda: copy.deepcopy(coord)), (lambda: copy.deepcopy(sigma))
        else:
            make_coord = lambda: _mlp(embed_dim, num_reg_fcs)  # noqa: E731
            make_sigma = lambda: _sigma_branch(embed_dim, num_reg_fcs, sigma_branch)  # noqa: E731
        self.fc_coord_branches = nn.ModuleList([make_coord() for _ in range(num_layers)])
        self.fc_coord_output_branches = (
            nn.ModuleList([make_coord() for _ in range(num_layers)]) if output_delta else None
        )
        self.fc_sigma_branches = nn.ModuleList([make_sigma() for _ in range(num_layers)])
        if not official:  # sigma starts near 0.5, as in RLEOutput
            for branch in self.fc_sigma_branches:
                _init_sigma_branch(branch, init)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        memory_index: Optional[torch.Tensor] = None,
        memory_padding_mask: Optional[torch.Tensor] = None,
        return_sampling: bool = False,
        memory_boxes: Optional[torch.Tensor] = None,
        all_layers: bool = True,
        frame_margin: float = 0.0,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            query, query_pos: (R, Q, C) from :class:`KeypointEncoder`, Q = G * K.
            reference_points: (R, Q, 2) initial normalised points.
            memory, spatial_shapes, level_start_index, memory_index, memory_padding_mask:
                see :meth:`PoseurDecoderLayer.forward`.
            return_sampling: also return every layer's EMSDA sampling locations and weights.
            memory_boxes: optional (R, 4) (x0, y0, w, h) of each instance's frame in the memory's
                normalised coordinates: reference points and outputs then live in that frame (e.g.
                box-relative for ROI heads) and EMSDA samples at x0 + x * w, y0 + y * h. None: the
                frame is the memory itself (top-down crops).
            frame_margin: m >= 0: the points may leave their frame by m frame sizes on each side (a
                box is a reference, not a cage: a truncated person's hidden keypoints lie outside
                its box). The refinement's sigmoid then covers [-m, 1 + m] instead of [0, 1]: it
                runs on u = (x + m) / (1 + 2m), and x = (1 + 2m) u - m is what EMSDA samples at
                and what the layers output. 0 (top-down crops) is the authors' refinement.
            all_layers: every layer's (mu_l, sigma_l); False (inference) computes only the last
                layer's, since earlier layers only need their reference refinement: it skips
                2 (num_layers - 1) small branches, which is latency on a CPU.

        Returns:
            dict with "coords" (num_layers, R, Q, 2) mu_l, "sigmas" (num_layers, R, Q, 2) in (0, 1)
            (a leading dimension of 1, the last layer, with all_layers=False),
            "references" (num_layers, R, Q, 2) the reference point each layer attended around,
            "refined_references" (num_layers, R, Q, 2) the point each layer refined it to (the
            next layer's reference; the authors' `inter_references`); with return_sampling,
            "sampling_locations" (num_layers, R, Q, M, L, P, 2) and "attention_weights"
            (num_layers, R, Q, M, L, P).
        """
        R, Q, _ = query.shape
        K = self.num_keypoints
        if Q % K != 0:
            raise ValueError(f"the number of queries ({Q}) must be a multiple of K = {K}")
        groups = Q // K
        if frame_margin < 0:
            raise ValueError(f"frame_margin must be >= 0, got {frame_margin}")
        span = 1.0 + 2.0 * frame_margin
        # the sigmoid refinement runs on u in (0, 1); x = span * u - m in (-m, 1 + m)
        to_u = (lambda x: (x + frame_margin) / span) if frame_margin else (lambda x: x)
        to_x = (lambda u: u * span - frame_margin) if frame_margin else (lambda u: u)
        h, ref = query, reference_points
        coords, sigmas, refs, refined, locs, weights = [], [], [], [], [], []
        for l, layer in enumerate(self.layers):
            refs.append(ref)
            at = ref if memory_boxes is None else memory_boxes[:, None, :2] + ref * memory_boxes[:, None, 2:]
            out = layer(h, query_pos, at, memory, spatial_shapes, level_start_index, None, memory_index,
                        memory_padding_mask, return_sampling, num_groups=groups)
            if return_sampling:
                h, loc, w = out
                locs.append(loc)
                weights.append(w)
            else:
                h = out
            with torch.autocast(h.device.type, enabled=False):  # coordinates and sigmas in float32
                hf = h.to(torch.promote_types(h.dtype, torch.float32))
                ref = to_x(torch.sigmoid(self.fc_coord_branches[l](hf) + inverse_sigmoid(to_u(ref))))  # not detached (official)
                refined.append(ref)
                if not all_layers and l < self.num_layers - 1:
                    continue
                mu = ref if self.fc_coord_output_branches is None else ref + self.fc_coord_output_branches[l](hf)
                coords.append(mu)
                sigmas.append(torch.sigmoid(self.fc_sigma_branches[l](hf)))
        result = dict(coords=torch.stack(coords), sigmas=torch.stack(sigmas), references=torch.stack(refs),
                      refined_references=torch.stack(refined))
        if return_sampling:
            result.update(sampling_locations=torch.stack(locs), attention_weights=torch.stack(weights))
        return result
