"""TransPose's Transformer encoder (paper Sec. 3.1 and Appendix C) and its position embeddings.

The encoder is the standard post-norm encoder of Vaswani et al. (DETR's form): per layer
    Q = K = X + P,  V = X;  X = LayerNorm(X + Dropout(MHSA(Q, K, V)));  X = LayerNorm(X + Dropout(FFN(X)))
with a ReLU FFN, the position embedding P added to queries and keys at every layer, never to the
values. Each layer can return its attention matrix averaged over the heads (the paper's A,
footnote 2), which is what the dependency areas are read from (`d2pose_transpose.dependency`).
`nn.MultiheadAttention` holds the projections, so the parameter names are the authors'
(`self_attn.in_proj_weight`, `self_attn.out_proj`, `linear1`, `linear2`, `norm1`, `norm2`).

Position embeddings (`TokenPositionEmbedding`, MODEL.TRANSPOSE.POS_EMBEDDING):
* "sine": the 2-D sine embedding of Appendix A (d/2 channels per axis, y first, positions
  normalised by the map size times 2 pi, temperature 10000), computed for the actual token grid, so
  crops of sizes never seen in training get their own embedding (`d2pose.layers.token_position_encoding`).
* "fixed": the authors' form: the same sine table computed once for the configured crop and stored
  in the checkpoint (converted official models carry it); other crop sizes get it resized
  bilinearly.
* "learnable": a learned table for the configured crop (Table 4's "Learnable"), resized likewise.
* "none": no position information (Table 4's first row).

Shape shorthand: R crops, L = h w tokens, d channels.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from d2pose.layers import token_position_encoding

__all__ = ["POS_EMBEDDINGS", "TokenPositionEmbedding", "TransformerEncoderLayer", "TransformerEncoder"]

POS_EMBEDDINGS = ("sine", "fixed", "learnable", "none")


class TokenPositionEmbedding(nn.Module):
    """The position embedding of an h x w token grid, (1, L, d) or None ("none")."""

    def __init__(self, mode: str, d_model: int, grid_size: Tuple[int, int]):
        """
        Args:
            mode: one of POS_EMBEDDINGS.
            d_model: d (even: half the channels per axis).
            grid_size: (h, w) token grid of the configured crop: the size of the stored table of
                "fixed" and "learnable".
        """
        super().__init__()
        if mode not in POS_EMBEDDINGS:
            raise ValueError(f"MODEL.TRANSPOSE.POS_EMBEDDING must be one of {POS_EMBEDDINGS}, got {mode!r}")
        if d_model % 4 != 0 and mode in ("sine", "fixed"):
            raise ValueError(f"MODEL.TRANSPOSE.EMBED_DIM ({d_model}) must be a multiple of 4 for the sine embedding "
                             "(d/2 channels per axis, in sin / cos pairs)")
        self.mode, self.d_model = mode, int(d_model)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        h, w = self.grid_size
        if mode == "fixed":
            # a constant of the checkpoint (the authors' `pos_embedding`, requires_grad False)
            self.register_buffer("weight", self.sine(h, w, d_model, torch.device("cpu"), torch.float32)[0].clone())
        elif mode == "learnable":
            self.weight = nn.Parameter(torch.empty(h * w, d_model))
            nn.init.trunc_normal_(self.weight, std=0.02)

    @staticmethod
    def sine(h: int, w: int, d_model: int, device, dtype) -> torch.Tensor:
        """Appendix A's table for an h x w grid, (1, h w, d), channels cat(y, x) (cached)."""
        return token_position_encoding(h, w, d_model, device=device, dtype=dtype, offset=0.0)

    def table_size(self) -> int:
        """Entries of the (L, d) sine table of the configured grid that the authors' models hold as a
        frozen parameter (and Table 1's #Params count) but d2pose does not count as a parameter:
        L x d for "sine" and "fixed" (a buffer), 0 for "none" and "learnable" (already a parameter)."""
        return self.grid_size[0] * self.grid_size[1] * self.d_model if self.mode in ("sine", "fixed") else 0

    def forward(self, h: int, w: int, device=None, dtype=torch.float32) -> Optional[torch.Tensor]:
        if self.mode == "none":
            return None
        if self.mode == "sine":
            return self.sine(h, w, self.d_model, device, dtype)
        table = self.weight
        if (h, w) != self.grid_size:
            H, W = self.grid_size
            grid = table.t().reshape(1, self.d_model, H, W)
            table = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).flatten(2)[0].t()
        return table.to(device=device, dtype=dtype)[None]


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer; `forward(x, pos, need_weights)` -> (x, head-averaged attention or None)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1, activation: str = "relu"):
        super().__init__()
        if d_model % nhead != 0:
            raise ValueError(f"MODEL.TRANSPOSE.EMBED_DIM ({d_model}) must be divisible by "
                             f"MODEL.TRANSPOSE.NUM_HEADS ({nhead})")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"MODEL.TRANSPOSE.ACTIVATION must be 'relu' or 'gelu', got {activation!r}")
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = F.relu if activation == "relu" else F.gelu

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                need_weights: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x: (R, L, d); pos: (1 or R, L, d) or None. Returns x and, with need_weights, (R, L, L)."""
        qk = x if pos is None else x + pos
        y, attn = self.self_attn(qk, qk, x, need_weights=need_weights, average_attn_weights=True)
        x = self.norm1(x + self.dropout1(y))
        y = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm2(x + self.dropout2(y)), attn


class TransformerEncoder(nn.Module):
    """A stack of TransformerEncoderLayer (no final norm, as the authors' encoder)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1,
                 activation: str = "relu"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MODEL.TRANSPOSE.NUM_ENCODER_LAYERS must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList(
            [TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation) for _ in range(num_layers)])
        for p in self.parameters():  # DETR's / the authors' initialisation of the encoder
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                attention_layers: Sequence[int] = ()) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Returns the encoded tokens and the attention maps of `attention_layers` (indices in
        0 .. num_layers - 1, in that order)."""
        want = set(attention_layers)
        maps = {}
        for i, layer in enumerate(self.layers):
            x, attn = layer(x, pos, need_weights=i in want)
            if attn is not None:
                maps[i] = attn
        return x, [maps[i] for i in attention_layers]
