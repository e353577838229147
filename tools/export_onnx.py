#!/usr/bin/env python
"""Export a crop-based pose model (RLE, Poseur, TransPose top-down configs) to ONNX
(`d2pose.export.command`; --help for the graph's inputs and outputs).

    python tools/export_onnx.py --config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml \
        --output poseur_R_50.onnx --check MODEL.WEIGHTS output/poseur_R_50_d2pose.pth

A model that cannot be exported is reported as a one-line error.
"""
from d2pose.export.command import cli

if __name__ == "__main__":
    cli()
