#!/usr/bin/env python
"""Model inference cost, measured side by side in one run: the whole model vs its backbone, and the
capacity of its inference path (latency, throughput, memory); `d2pose.modeling.benchmark` says
what is timed and how.

    python tools/benchmark.py [--config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml [more.yaml ...]]
        [--batch 1] [--threads 2] [--repeats 20] [--precision auto|float32|bfloat16]
        [--max-batch 32] [--budget SECONDS] [--device cpu|cuda] [--append [BENCHMARKS.md]]
        [--onnx [--onnx-batches 1 32] [--onnx-repeats 5]] [KEY VALUE ...]

Config overrides: KEY VALUE pairs at the end, or anywhere after --opts (d2pose.engine.cli); after
--config-file's files, give them after another option (else they are read as more files).
"""
import argparse
from typing import List, Optional

from d2pose.engine.cli import overrides_last
from d2pose.modeling import benchmark


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line alone (nothing measured)."""
    return benchmark.build_parser().parse_args(overrides_last(argv))


def main(argv: Optional[List[str]] = None):
    """Benchmarks as the command line says (`d2pose.modeling.benchmark.main`)."""
    return benchmark.main(overrides_last(argv))


if __name__ == "__main__":
    main()
