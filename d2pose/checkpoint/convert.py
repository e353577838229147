"""Converters of the authors' checkpoints into d2pose models: RLE (Li et al., ICCV 2021, the official
`rlepose` code, `RegressFlow`) and Poseur (Mao et al., ECCV 2022, the official MMPose 0.28 fork,
`Poseur` with `PoseurHead`).

Each converter is a pure function `official state_dict -> (d2pose state_dict, overrides)`. The layout
(depth, decoder layers, widths, heads, ...) is read from the tensors; every official tensor is mapped
to a d2pose name, reshaped or folded exactly where the layouts differ, and `overrides` (a flat
[KEY, VALUE, ...] list for `cfg.merge_from_list`) makes a config build a model whose state_dict is
exactly the converted one and whose inference follows the authors' code. An official key the
layout does not explain, or a key the layout needs but the checkpoint lacks, raises ValueError
naming the first one (old checkpoints without BatchNorm `num_batches_tracked` get zeros).

Layout differences handled beyond renaming:
- ResNet: torchvision names (`conv1`, `bn1`, `layer{i}.{j}.conv{k}` / `bn{k}` / `downsample.{0,1}`)
  -> Detectron2's (`stem.conv1` + `.norm`, `res{i+1}.{j}.conv{k}` + `.norm`, `shortcut` + `.norm`).
- Poseur coarse FC: the authors' coarse output is the raw FC output, already in [0, 1] crop units
  (their reference points and targets); d2pose's RLEOutput adds 0.5, so 0.5 is subtracted from the
  bias (exact up to one float32 rounding).
- Poseur sigma branches: the authors stack 1 + NUM_REG_FCS linear layers without activations;
  they fold into d2pose's single Linear, W = W_n ... W_1 and b = W_n (... (W_2 b_1 + b_2) ...) + b_n,
  computed in float64.
- EMSDA value projection: the authors' Embedding(M C, C / M) table is d2pose's (M, C, C / M) per-head
  weight (row m C + c = weight[m, c]); the bias Embedding(M, C / M) maps as it is.
- RealNVP flows (RLE `flow`, Poseur `enc_flow` / `dec_flow`), masks included, are copied as stored.

Not in the checkpoint, set by the overrides: the flows' prior mean (RLE 0, Poseur 0.5) and the input
normalisation of the authors' pipelines (RLE: RGB / 255 minus (0.406, 0.457, 0.480), no std; Poseur:
ImageNet mean / std on RGB).

Shape shorthand: K keypoints, C channels, M heads, L decoder layers, P points.
"""
import json
import logging
import os
import pickle
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Sequence, Tuple

import torch

__all__ = [
    "CONVERTERS",
    "convert_rle_official",
    "convert_poseur_official",
    "read_checkpoint",
    "load_official_checkpoint",
]

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]
# one converted tensor: d2pose name, official source names, function of the sources
_Entry = Tuple[str, Tuple[str, ...], Callable[..., torch.Tensor]]

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# ResNet depth from (bottleneck, blocks per stage)
_RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34,
    (True, (3, 4, 6, 3)): 50, (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152,
}
_ALTERNATING_MASKS = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 3)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _copy(dst: str, src: str) -> _Entry:
    return dst, (src,), _same


def _copy_all(dst: str, src: str, params: Sequence[str] = ("weight", "bias")) -> List[_Entry]:
    """`{dst}{p}` <- `{src}{p}` for every p (a module's parameters)."""
    return [_copy(dst + p, src + p) for p in params]


def _fill_num_batches_tracked(sd: StateDict) -> StateDict:
    """Adds zero `num_batches_tracked` next to BatchNorm statistics that lack it (pre-1.0 PyTorch)."""
    out = OrderedDict(sd)
    for name in sd:
        if name.endswith(".running_mean"):
            nbt = name[: -len("running_mean")] + "num_batches_tracked"
            if nbt not in out:
                out[nbt] = torch.zeros((), dtype=torch.long)
    return out


def _resnet_layout(sd: StateDict, prefix: str) -> Tuple[int, bool, Tuple[int, ...]]:
    """Depth, bottleneck?, blocks per stage of a torchvision-named ResNet stored under `prefix`."""
    if f"{prefix}conv1.weight" not in sd:
        raise ValueError(f"missing key {prefix}conv1.weight: no torchvision-named ResNet under {prefix!r}")
    blocks = []
    for i in range(1, 5):
        n = 0
        while f"{prefix}layer{i}.{n}.conv1.weight" in sd:
            n += 1
        blocks.append(n)
    bottleneck = f"{prefix}layer1.0.conv3.weight" in sd
    depth = _RESNET_DEPTHS.get((bottleneck, tuple(blocks)))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(f"{prefix!r}: a ResNet with {kind} blocks {blocks} per stage is not a standard depth")
    return depth, bottleneck, tuple(blocks)


def _resnet_entries(src: str, dst: str, bottleneck: bool, blocks: Sequence[int]) -> List[_Entry]:
    """torchvision ResNet names under `src` -> Detectron2 ResNet names under `dst`."""
    entries = [_copy(f"{dst}stem.conv1.weight", f"{src}conv1.weight")]
    entries += _copy_all(f"{dst}stem.conv1.norm.", f"{src}bn1.", _BN)
    convs = 3 if bottleneck else 2
    for i, n in enumerate(blocks, start=1):
        for j in range(n):
            s, d = f"{src}layer{i}.{j}.", f"{dst}res{i + 1}.{j}."
            for k in range(1, convs + 1):
                entries.append(_copy(f"{d}conv{k}.weight", f"{s}conv{k}.weight"))
                entries += _copy_all(f"{d}conv{k}.norm.", f"{s}bn{k}.", _BN)
            if j == 0 and (bottleneck or i > 1):  # the first block of a stage changes width / stride
                entries.append(_copy(f"{d}shortcut.weight", f"{s}downsample.0.weight"))
                entries += _copy_all(f"{d}shortcut.norm.", f"{s}downsample.1.", _BN)
    return entries


def _resnet_overrides(depth: int, bottleneck: bool, out_features: Sequence[str]) -> List[str]:
    ov = ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.RESNETS.DEPTH", str(depth),
          "MODEL.RESNETS.STRIDE_IN_1X1", "False", "MODEL.RESNETS.NORM", "BN",
          "MODEL.RESNETS.OUT_FEATURES", json.dumps(list(out_features)),
          "MODEL.TOPDOWN.IN_FEATURES", json.dumps(list(out_features)), "MODEL.TOPDOWN.COORD_CHANNELS", "False"]
    if not bottleneck:
        ov += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    return ov


def _flow_entries(src: str, dst: str, sd: StateDict) -> List[_Entry]:
    """A RealNVP flow (`mask`, `s.{i}`, `t.{i}` 2-64-64-2 nets) copied under a new prefix."""
    if f"{src}mask" not in sd:
        raise ValueError(f"missing key {src}mask (the RealNVP flow)")
    mask = sd[f"{src}mask"]
    if mask.shape != _ALTERNATING_MASKS.shape:
        raise ValueError(f"{src}mask has shape {tuple(mask.shape)}, d2pose's RealNVP has "
                         f"{tuple(_ALTERNATING_MASKS.shape)}")
    if not torch.equal(mask.float(), _ALTERNATING_MASKS):
        logger.warning("%smask is not RealNVP's alternating [[0, 1], [1, 0]] x 3: copied as stored", src)
    entries = [_copy(f"{dst}mask", f"{src}mask")]
    for net in ("s", "t"):
        for i in range(mask.shape[0]):
            for layer in (0, 2, 4):  # Linear, LeakyReLU, Linear, LeakyReLU, Linear[, Tanh]
                entries += _copy_all(f"{dst}{net}.{i}.{layer}.", f"{src}{net}.{i}.{layer}.")
    return entries


def _apply(sd: StateDict, entries: List[_Entry], what: str) -> StateDict:
    """Runs the plan: every official key must be a source and every source must exist."""
    used = {s for _, sources, _ in entries for s in sources}
    for name in sd:
        if name not in used:
            raise ValueError(f"{what}: unexpected key {name!r} {tuple(sd[name].shape)} (not part of the layout "
                             "read from this checkpoint)")
    out = OrderedDict()
    for dst, sources, fn in entries:
        for s in sources:
            if s not in sd:
                raise ValueError(f"{what}: missing key {s!r} (needed for d2pose's {dst!r})")
        out[dst] = fn(*[sd[s] for s in sources]).contiguous()
    return out


def convert_rle_official(state_dict: StateDict) -> Tuple[StateDict, List[str]]:
    """The authors' RLE `RegressFlow` (ResNet `preact` + GAP + `fc_coord` / `fc_sigma` + `flow`)
    -> d2pose's TopDownPoseEstimator with RLERegressionHead.

    The official targets are x / W - 0.5, so the overrides set INPUT.TOPDOWN.REGRESSION_CENTERED
    (RLEOutput offset 0: the coordinate FC is copied unchanged). Checkpoints with extra FC layers
    (NUM_FC_FILTERS > 0, `fcs.*`) are not supported: the first such key raises ValueError.

    Returns:
        the d2pose state_dict (backbone.*, head.output.*, head.loss.flow.*) and the overrides.
    """
    sd = _fill_num_batches_tracked(state_dict)
    depth, bottleneck, blocks = _resnet_layout(sd, "preact.")
    entries = _resnet_entries("preact.", "backbone.", bottleneck, blocks)
    entries += _copy_all("head.output.fc_coord.linear.", "fc_coord.linear.")
    entries += _copy_all("head.output.fc_sigma.", "fc_sigma.linear.")
    entries += _flow_entries("flow.", "head.loss.flow.", sd)
    out = _apply(sd, entries, "RLE checkpoint")
    overrides = _resnet_overrides(depth, bottleneck, ["res5"]) + [
        "MODEL.TOPDOWN.HEAD", "RLERegressionHead",
        "MODEL.RLE.AUX_HEATMAP_FEATURE", "''",
        "INPUT.TOPDOWN.REGRESSION_CENTERED", "True",  # official targets x / W - 0.5
        # ... of pixel-index coordinates (pixel i at x = i; flip-back -x - 1/W)
        "INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX", "True",
        "MODEL.RLE.SCORE_FORM", "rle",  # official maxvals: mean over x, y of 1 - sigma
        # official preprocessing: RGB / 255 minus (0.406, 0.457, 0.480), no std division
        "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", "[103.53, 116.535, 122.4]",
        "MODEL.PIXEL_STD", "[255.0, 255.0, 255.0]",
    ]
    return out, overrides


def _fold_linears(*tensors: torch.Tensor) -> torch.Tensor:
    """(W_1, b_1, ..., W_n, b_n) of stacked linears without activations -> cat(W, b[:, None])."""
    weights, biases = tensors[0::2], tensors[1::2]
    W, b = weights[0].double(), biases[0].double()
    for Wi, bi in zip(weights[1:], biases[1:]):
        W, b = Wi.double() @ W, Wi.double() @ b + bi.double()
    return torch.cat([W, b[:, None]], dim=1).to(weights[0].dtype)


def _count(sd: StateDict, pattern: str) -> int:
    """How many consecutive i from 0 make pattern.format(i) a key."""
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def _poseur_decoder_entries(sd: StateDict, L: int, M: int, C: int) -> List[_Entry]:
    """The decoder layers (`keypoint_head.transformer.decoder.layers.{i}`) -> `head.decoder.layers.{i}`."""
    entries = []
    D = C // M
    for i in range(L):
        s, d = f"keypoint_head.transformer.decoder.layers.{i}.", f"head.decoder.layers.{i}."
        entries += _copy_all(f"{d}self_attn.", f"{s}attentions.0.attn.",
                             ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"))
        for m in ("sampling_offsets", "attention_weights", "output_proj"):
            entries += _copy_all(f"{d}cross_attn.{m}.", f"{s}attentions.1.{m}.")
        table = f"{s}attentions.1.value_proj_weight.weight"
        if table in sd and tuple(sd[table].shape) != (M * C, D):
            raise ValueError(f"{table} has shape {tuple(sd[table].shape)}, expected (M C, C / M) = {(M * C, D)}")
        # Embedding(M C, C / M): row m C + c holds head m's projection of input channel c
        entries.append((f"{d}cross_attn.value_proj_weight", (table,), lambda t: t.reshape(M, C, D)))
        entries.append(_copy(f"{d}cross_attn.value_proj_bias", f"{s}attentions.1.value_proj_bias.weight"))
        entries += _copy_all(f"{d}linear1.", f"{s}ffns.0.layers.0.0.")  # Linear, ReLU, Dropout
        entries += _copy_all(f"{d}linear2.", f"{s}ffns.0.layers.1.")
        for k in range(3):
            entries += _copy_all(f"{d}norm{k + 1}.", f"{s}norms.{k}.")
    return entries


def _poseur_branch_entries(sd: StateDict, L: int, num_reg_fcs: int, output_delta: bool) -> List[_Entry]:
    """Per-layer coordinate / sigma branches -> `head.decoder.fc_*_branches.{l}`."""
    entries = []
    names = ["fc_coord_branches"] + (["fc_coord_output_branches"] if output_delta else [])
    for l in range(L):
        for name in names:  # Linear, ReLU, ..., Linear: the linears sit at even indices
            for k in range(0, 2 * num_reg_fcs + 1, 2):
                entries += _copy_all(f"head.decoder.{name}.{l}.{k}.", f"keypoint_head.{name}.{l}.{k}.")
        s = f"keypoint_head.fc_sigma_branches.{l}."
        sources = []
        for k in range(num_reg_fcs):
            sources += [f"{s}{k}.weight", f"{s}{k}.bias"]
        sources += [f"{s}{num_reg_fcs}.linear.weight", f"{s}{num_reg_fcs}.linear.bias"]
        folded = f"head.decoder.fc_sigma_branches.{l}."
        entries.append((folded + "weight", tuple(sources), lambda *t: _fold_linears(*t)[:, :-1]))
        entries.append((folded + "bias", tuple(sources), lambda *t: _fold_linears(*t)[:, -1]))
    return entries


def convert_poseur_official(state_dict: StateDict) -> Tuple[StateDict, List[str]]:
    """The authors' Poseur (mmpose ResNet `backbone`, ChannelMapper `neck`, `keypoint_head` with
    PoseurTransformer, branches and flows) -> d2pose's TopDownPoseEstimator with PoseurHead.

    The overrides set the authors' architecture options (NUM_REG_FCS, OUTPUT_DELTA, the coarse FC on
    the neck output, flow prior mean 0.5) and their inference rules: keypoint score mean(1 - sigma)
    of the last layer and flip fusion by averaging (the `default` `filp_fuse_type` of the COCO
    configs). Only ResNet backbones are converted.

    Returns:
        the d2pose state_dict (backbone.*, head.*) and the overrides.
    """
    sd = _fill_num_batches_tracked(state_dict)
    depth, bottleneck, blocks = _resnet_layout(sd, "backbone.")
    entries = _resnet_entries("backbone.", "backbone.", bottleneck, blocks)
    t = "keypoint_head.transformer."
    if f"{t}level_embeds" not in sd:
        raise ValueError(f"Poseur checkpoint: missing key {t}level_embeds")
    levels, C = sd[f"{t}level_embeds"].shape
    if levels != 4:
        raise ValueError(f"Poseur checkpoint: {levels} feature levels; the ResNet conversion needs 4 (res2-res5)")
    L = _count(sd, t + "decoder.layers.{}.norms.0.weight")
    bias = f"{t}decoder.layers.0.attentions.1.value_proj_bias.weight"
    if L == 0 or bias not in sd:
        raise ValueError(f"Poseur checkpoint: missing key {bias} (no decoder layer)")
    M = sd[bias].shape[0]
    P = sd[f"{t}decoder.layers.0.attentions.1.attention_weights.weight"].shape[0] // (M * levels)
    ffn = sd[f"{t}decoder.layers.0.ffns.0.layers.0.0.weight"].shape[0]
    # the coordinate branch of layer 0: num_reg_fcs x (Linear, ReLU), then Linear C -> 2
    linears = [k for k in sd if re.fullmatch(r"keypoint_head\.fc_coord_branches\.0\.\d+\.weight", k)]
    if not linears:
        raise ValueError("Poseur checkpoint: missing key keypoint_head.fc_coord_branches.0.0.weight")
    num_reg_fcs = len(linears) - 1
    output_delta = "keypoint_head.fc_coord_output_branches.0.0.weight" in sd

    for i in range(levels):
        entries.append(_copy(f"head.neck.convs.{i}.conv.weight", f"neck.convs.{i}.conv.weight"))
        entries += _copy_all(f"head.neck.convs.{i}.gn.", f"neck.convs.{i}.gn.")
    entries.append(_copy("head.level_embeds", f"{t}level_embeds"))
    entries.append(_copy("head.coarse.fc_coord.linear.weight", f"{t}fc_coord.linear.weight"))
    # official coarse mu = W x / |x| + b in [0, 1] units; d2pose adds 0.5 after the FC
    entries.append(("head.coarse.fc_coord.linear.bias", (f"{t}fc_coord.linear.bias",),
                    lambda b: (b.double() - 0.5).to(b.dtype)))
    entries += _copy_all("head.coarse.fc_sigma.", f"{t}fc_sigma.linear.")
    entries += _copy_all("head.keypoint_encoder.pos_trans.", f"{t}pos_trans.")
    entries += _copy_all("head.keypoint_encoder.pos_trans_norm.", f"{t}pos_trans_norm.")
    entries.append(_copy("head.keypoint_encoder.pos_embed.weight", f"{t}pos_embed.weight"))
    entries += _poseur_decoder_entries(sd, L, M, C)
    entries += _poseur_branch_entries(sd, L, num_reg_fcs, output_delta)
    entries += _flow_entries("keypoint_head.enc_flow.", "head.enc_loss.flow.", sd)
    entries += _flow_entries("keypoint_head.dec_flow.", "head.dec_loss.flow.", sd)
    out = _apply(sd, entries, "Poseur checkpoint")
    overrides = _resnet_overrides(depth, bottleneck, ["res2", "res3", "res4", "res5"]) + [
        "MODEL.TOPDOWN.HEAD", "PoseurHead",
        "MODEL.POSEUR.NUM_DECODER_LAYERS", str(L),
        "MODEL.POSEUR.EMBED_DIM", str(C),
        "MODEL.POSEUR.NUM_HEADS", str(M),
        "MODEL.POSEUR.NUM_POINTS", str(P),
        "MODEL.POSEUR.FFN_DIM", str(ffn),
        "MODEL.POSEUR.NUM_REG_FCS", str(num_reg_fcs),
        "MODEL.POSEUR.OUTPUT_DELTA", str(output_delta),
        "MODEL.POSEUR.COARSE_FEATURE", "neck",  # the coarse FC pools the neck's last level
        "MODEL.POSEUR.FLOW_PRIOR_MEAN", "0.5",  # both flows' prior N(0.5, I) in the authors' code
        "MODEL.POSEUR.SCORE_FORM", "rle",  # official maxvals: mean over x, y of 1 - sigma
        "MODEL.POSEUR.FLIP_FUSE", "mean",  # official default fusion: coords and scores averaged
        "INPUT.TOPDOWN.REGRESSION_CENTERED", "False",
        # official preprocessing (mmpose NormalizeTensor on RGB)
        "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]",
        "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
    ]
    return out, overrides


CONVERTERS = {"rle": convert_rle_official, "poseur": convert_poseur_official}


def _numpy_safe_globals() -> list:
    """numpy scalar / array / dtype reconstructors that mmcv checkpoint metadata may pickle (e.g. a
    best score in `meta.hook_msgs`): they rebuild data, not code, so the weights-only unpickler may
    use them (PyTorch's documented allowlist for numpy values)."""
    import numpy as np

    allowed = [np.dtype, np.ndarray]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            multiarray = __import__(module, fromlist=["scalar"])
        except ImportError:
            continue
        allowed += [multiarray.scalar, multiarray._reconstruct]
        break
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def read_checkpoint(path: str) -> StateDict:
    """The state_dict stored in an official checkpoint file, read without running pickled code.

    `.safetensors` files are read with safetensors; other files with `torch.load(weights_only=True)`
    (numpy values in the metadata allowed). The state_dict is taken from "state_dict" (mmcv) or
    "model" when present, else the file is the state_dict; a DataParallel "module." prefix is removed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return OrderedDict(load_file(path, device="cpu"))
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = found.group(1) if found else str(e).splitlines()[0]
        raise ValueError(f"{path} holds objects other than tensors, plain containers and numpy values ({what}); "
                         "d2pose only reads checkpoints with torch.load(weights_only=True)") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors, possibly under 'state_dict')")
    if obj and all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return OrderedDict(obj)


def load_official_checkpoint(path: str, method: str) -> Tuple[StateDict, List[str]]:
    """Reads an official checkpoint (see :func:`read_checkpoint`) and converts it with
    CONVERTERS[method] ("rle" or "poseur"): (d2pose state_dict, config overrides)."""
    if method not in CONVERTERS:
        raise ValueError(f"method must be one of {sorted(CONVERTERS)}, got {method!r}")
    return CONVERTERS[method](read_checkpoint(path))
