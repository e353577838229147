"""The checkpoint converter's command line (tools/convert_checkpoint.py): an official RLE, Poseur,
TransPose or LOGO-CAP checkpoint -> a Detectron2 checkpoint ({"model": state_dict}) for d2pose.

    python tools/convert_checkpoint.py --method rle --input rle_res50.pth --output output/rle_R_50_d2pose.pth
    python tools/convert_checkpoint.py --method poseur --input poseur_res50.pth --output output/poseur_R_50_d2pose.pth
    python tools/convert_checkpoint.py --method transpose --input tp_r_256x192_enc4_d256_h1024_mh8.pth \\
        --output output/transpose_r_a4_d2pose.pth
    python tools/convert_checkpoint.py --method logocap --input logocap_w32_coco.pth \\
        --output output/logocap_w32_d2pose.pth

`--help` lists the methods from the converters' registry (`CONVERTERS`): every method whose package
registered one. The input is read without running pickled code (`torch.load(weights_only=True)`, or
safetensors); mmcv checkpoints nest the weights under "state_dict". The output holds
{"model": state_dict}, which `DetectionCheckpointer` (MODEL.WEIGHTS) loads. The command prints the config overrides the converted
weights need (architecture options and the authors' input normalisation and inference rules), e.g.

    python train_net.py --config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml --eval-only \\
        MODEL.WEIGHTS output/poseur_R_50_d2pose.pth <printed overrides>

An existing output file is never replaced unless --overwrite is given, and a checkpoint that is
d2pose's already (trained with d2pose or converted before) is refused, saying to load it with
MODEL.WEIGHTS (`AlreadyConvertedError`).
"""
import argparse
import os
import shlex
import textwrap
from typing import List, Mapping, Optional

import torch

from ..utils.io import atomic_write
from .convert import CONVERTERS, AlreadyConvertedError, load_official_checkpoint

__all__ = ["build_parser", "save_d2_checkpoint", "main"]


def save_d2_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str, overwrite: bool = False) -> None:
    """Writes {"model": state_dict} to `path` (atomically: an interrupted write never leaves a
    truncated checkpoint); refuses to replace an existing file without `overwrite`."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: torch.save({"model": dict(state_dict)}, f))


def _methods_help() -> str:
    """Every registered converter (CONVERTERS.names()) with the first paragraph of its docstring."""
    lines = []
    for name in CONVERTERS.names():
        doc = " ".join((CONVERTERS.get(name).__doc__ or "").strip().split("\n\n")[0].split())
        lines += textwrap.wrap(doc or name, width=100, initial_indent=f"  {name:<10} ", subsequent_indent=" " * 13)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser; its help lists every method of the converters' registry."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="methods (--method):\n" + _methods_help())
    parser.add_argument("--method", required=True, choices=CONVERTERS.names(),
                        help=f"the method whose authors wrote the checkpoint: {', '.join(CONVERTERS.names())}")
    parser.add_argument("--input", required=True, help="official checkpoint (.pth / .pt / .safetensors)")
    parser.add_argument("--output", required=True, help="d2pose checkpoint to write (.pth)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Converts and saves; returns the config overrides (flat KEY, VALUE list). A checkpoint in d2pose's
    format already exits with a message saying to load it with MODEL.WEIGHTS."""
    args = build_parser().parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:  # fail before the (slow) conversion
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    try:
        state_dict, overrides = load_official_checkpoint(args.input, args.method)
    except AlreadyConvertedError as e:
        raise SystemExit(f"convert_checkpoint.py: {e}") from None
    save_d2_checkpoint(state_dict, args.output, overwrite=args.overwrite)
    n = sum(t.numel() for t in state_dict.values())
    print(f"wrote {args.output}: {len(state_dict)} tensors, {n:,} values")
    print("config overrides for these weights:")
    print(" ".join(shlex.quote(v) for v in ["MODEL.WEIGHTS", args.output] + overrides))
    return overrides
