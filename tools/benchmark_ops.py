#!/usr/bin/env python
"""Benchmark of multi-scale deformable attention backends (`d2pose.layers.ops_benchmark`): the
reference vs the compiled kernels, and Poseur's shared-value EMSDA vs repeat-then-MSDA.

    python tools/benchmark_ops.py [--threads 2] [--repeats 5] [--quick]
"""
import argparse
from typing import Dict, List, Optional

from d2pose.layers.ops_benchmark import benchmark_ops


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions (the fastest is reported: the least disturbed by other load)")
    parser.add_argument("--quick", action="store_true", help="smaller batch, for a smoke run")
    args = parser.parse_args(argv)
    return benchmark_ops(args.threads, args.repeats, args.quick)


if __name__ == "__main__":
    main()
