"""The toolkit of the checkpoint converters: a converter maps the authors' state_dict to d2pose's with a
*plan*, a list of `Entry` (d2pose name, official source names, function of the sources), built with
`copy_entry` / `copy_entries` / `resnet_entries` / `flow_entries`, run by `apply_plan` and read back as
a name table by `official_names`. The converters themselves live in the method packages
(`d2pose_<method>.convert`) and register in `d2pose.checkpoint.convert.CONVERTERS`.

Every official tensor is mapped to a d2pose name, reshaped or folded exactly where the layouts differ;
an official key the layout does not explain, or a key the layout needs but the checkpoint lacks,
makes `apply_plan` raise ValueError naming every such key (old checkpoints without BatchNorm
`num_batches_tracked` get zeros: `fill_num_batches_tracked`).

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

Shape shorthand: K keypoints, C channels, M heads, L decoder layers, P points.
"""
import json
import logging
from collections import OrderedDict
from typing import Callable, Dict, List, Sequence, Tuple

import torch

__all__ = [
    "StateDict",
    "Entry",
    "BN_PARAMS",
    "copy_entry",
    "copy_entries",
    "fill_num_batches_tracked",
    "resnet_layout",
    "resnet_entries",
    "resnet_overrides",
    "flow_entries",
    "apply_plan",
    "official_names",
]

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]
# one converted tensor: d2pose name, official source names, function of the sources
Entry = Tuple[str, Tuple[str, ...], Callable[..., torch.Tensor]]

BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# ResNet depth from (bottleneck, blocks per stage)
_RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34,
    (True, (3, 4, 6, 3)): 50, (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152,
}
_ALTERNATING_MASKS = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 3)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def copy_entry(dst: str, src: str) -> Entry:
    return dst, (src,), _same


def copy_entries(dst: str, src: str, params: Sequence[str] = ("weight", "bias")) -> List[Entry]:
    """`{dst}{p}` <- `{src}{p}` for every p (a module's parameters)."""
    return [copy_entry(dst + p, src + p) for p in params]


def fill_num_batches_tracked(sd: StateDict) -> StateDict:
    """Adds zero `num_batches_tracked` next to BatchNorm statistics that lack it (pre-1.0 PyTorch)."""
    out = OrderedDict(sd)
    for name in sd:
        if name.endswith(".running_mean"):
            nbt = name[: -len("running_mean")] + "num_batches_tracked"
            if nbt not in out:
                out[nbt] = torch.zeros((), dtype=torch.long)
    return out


def resnet_layout(sd: StateDict, prefix: str) -> Tuple[int, bool, Tuple[int, ...]]:
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


def resnet_entries(src: str, dst: str, bottleneck: bool, blocks: Sequence[int]) -> List[Entry]:
    """torchvision ResNet names under `src` -> Detectron2 ResNet names under `dst`."""
    entries = [copy_entry(f"{dst}stem.conv1.weight", f"{src}conv1.weight")]
    entries += copy_entries(f"{dst}stem.conv1.norm.", f"{src}bn1.", BN_PARAMS)
    convs = 3 if bottleneck else 2
    for i, n in enumerate(blocks, start=1):
        for j in range(n):
            s, d = f"{src}layer{i}.{j}.", f"{dst}res{i + 1}.{j}."
            for k in range(1, convs + 1):
                entries.append(copy_entry(f"{d}conv{k}.weight", f"{s}conv{k}.weight"))
                entries += copy_entries(f"{d}conv{k}.norm.", f"{s}bn{k}.", BN_PARAMS)
            if j == 0 and (bottleneck or i > 1):  # the first block of a stage changes width / stride
                entries.append(copy_entry(f"{d}shortcut.weight", f"{s}downsample.0.weight"))
                entries += copy_entries(f"{d}shortcut.norm.", f"{s}downsample.1.", BN_PARAMS)
    return entries


def resnet_overrides(depth: int, bottleneck: bool, out_features: Sequence[str]) -> List[str]:
    ov = ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.RESNETS.DEPTH", str(depth),
          "MODEL.RESNETS.STRIDE_IN_1X1", "False", "MODEL.RESNETS.NORM", "BN",
          "MODEL.RESNETS.OUT_FEATURES", json.dumps(list(out_features)),
          "MODEL.TOPDOWN.IN_FEATURES", json.dumps(list(out_features))]
    if not bottleneck:
        ov += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    return ov


def flow_entries(src: str, dst: str, sd: StateDict) -> List[Entry]:
    """A RealNVP flow (`mask`, `s.{i}`, `t.{i}` 2-64-64-2 nets) copied under a new prefix."""
    if f"{src}mask" not in sd:
        raise ValueError(f"missing key {src}mask (the RealNVP flow)")
    mask = sd[f"{src}mask"]
    if mask.shape != _ALTERNATING_MASKS.shape:
        raise ValueError(f"{src}mask has shape {tuple(mask.shape)}, d2pose's RealNVP has "
                         f"{tuple(_ALTERNATING_MASKS.shape)}")
    if not torch.equal(mask.float(), _ALTERNATING_MASKS):
        logger.warning("%smask is not RealNVP's alternating [[0, 1], [1, 0]] x 3: copied as stored", src)
    entries = [copy_entry(f"{dst}mask", f"{src}mask")]
    for net in ("s", "t"):
        for i in range(mask.shape[0]):
            for layer in (0, 2, 4):  # Linear, LeakyReLU, Linear, LeakyReLU, Linear[, Tanh]
                entries += copy_entries(f"{dst}{net}.{i}.{layer}.", f"{src}{net}.{i}.{layer}.")
    return entries


def apply_plan(sd: StateDict, entries: List[Entry], what: str) -> StateDict:
    """Runs the plan: every official key must be a source and every source must exist; otherwise
    ValueError names every unexpected and every missing key (unexpected first, in checkpoint order)."""
    used = {s for _, sources, _ in entries for s in sources}
    problems = [f"unexpected key {name!r} {tuple(sd[name].shape)} (not part of the layout read from this checkpoint)"
                for name in sd if name not in used]
    needed = OrderedDict((s, dst) for dst, sources, _ in entries for s in sources if s not in sd)
    problems += [f"missing key {s!r} (needed for d2pose's {dst!r})" for s, dst in needed.items()]
    if problems:
        raise ValueError(f"{what}: {len(problems)} key problem(s): " + "; ".join(problems))
    out = OrderedDict()
    for dst, sources, fn in entries:
        out[dst] = fn(*[sd[s] for s in sources]).contiguous()
    return out


def official_names(entries: List[Entry]) -> Dict[str, str]:
    """A converter's plan as a name table: {d2pose name: the authors' name} of every converted tensor
    made from exactly one official tensor (copies, reshapes, shifts), in plan order. Read from the
    plan itself, so it cannot drift from the converter: it names d2pose's parameters the authors' way
    (e.g. to compare per-parameter gradients with theirs, tests/projects/*/test_train_parity.py)."""
    return OrderedDict((dst, sources[0]) for dst, sources, _ in entries if len(sources) == 1)
