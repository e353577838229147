#!/usr/bin/env python
"""Model inference cost, measured side by side in one run: the whole model vs its backbone, and the
capacity of its inference path (latency, throughput, memory); `d2pose.modeling.benchmark` says
what is timed and how.

    python tools/benchmark.py [--config-file projects/Poseur/configs/poseur_R_50_256x192_coco.yaml [more.yaml ...]]
        [--batch 1] [--threads 2] [--repeats 20] [--precision auto|float32|bfloat16]
        [--max-batch 32] [--budget SECONDS] [--device cpu|cuda] [--append [BENCHMARKS.md]]
        [--onnx [--onnx-batches 1 32] [--onnx-repeats 5]] [opts ...]
"""
from d2pose.modeling.benchmark import main

if __name__ == "__main__":
    main()
