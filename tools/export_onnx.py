#!/usr/bin/env python
"""Export a crop-based pose model (RLE, Poseur, TransPose top-down configs) to ONNX
(`d2pose.export.command`; --help for the graph's inputs and outputs).

    python tools/export_onnx.py --config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml \
        --output poseur_R_50.onnx --check MODEL.WEIGHTS output/poseur_R_50_d2pose.pth

A model that cannot be exported is reported as a one-line error. Config overrides: KEY VALUE pairs at
the end, or anywhere after --opts (d2pose.engine.cli).
"""
import argparse
from typing import Dict, List, Optional

from d2pose.engine.cli import overrides_last
from d2pose.export import command


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line alone (nothing exported)."""
    return command.parse_args(overrides_last(argv))


def main(argv: Optional[List[str]] = None) -> Dict:
    """Exports as the command line says (`d2pose.export.command.cli`)."""
    return command.cli(overrides_last(argv))


if __name__ == "__main__":
    main()
