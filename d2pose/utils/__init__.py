"""Utilities shared by the library, its tools and benchmarks (machine facts, measured peaks, logging)."""
from .logger import drop_duplicate_handlers, setup_logger
from .machine import cpu_capability, cpu_model, describe_machine, measure_peaks, native_bfloat16

__all__ = ["cpu_capability", "cpu_model", "describe_machine", "drop_duplicate_handlers", "measure_peaks",
           "native_bfloat16", "setup_logger"]
