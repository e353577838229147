"""Utilities shared by the library, its tools and benchmarks (machine facts, measured peaks)."""
from .machine import cpu_capability, cpu_model, describe_machine, measure_peaks, native_bfloat16

__all__ = ["cpu_capability", "cpu_model", "describe_machine", "measure_peaks", "native_bfloat16"]
