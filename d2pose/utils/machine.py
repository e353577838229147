"""What the machine can do: CPU model and vector capability, native bfloat16 support, and the
measured convolution / matmul peak in a given precision.

Benchmarks print these next to every time (`describe_machine`), so each result reads as a fraction
of the machine's limit, and the precision policy (`d2pose.engine.precision`) asks
`native_bfloat16()` before choosing bfloat16 on a CPU: where bfloat16 is emulated (AVX2-only CPUs)
it runs about 70-140x slower than float32.

FLOP convention here: one multiply-add is 2 FLOPs (so GFLOP/s compare with vendor peaks); fvcore
counts a multiply-add once, so `2 * fvcore GFLOPs / seconds` is the comparable rate.
"""
import functools
import logging
import os
import platform
import time
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "cpu_model",
    "cpu_capability",
    "native_bfloat16",
    "measure_peaks",
    "describe_machine",
    "reset_peak_memory",
    "peak_memory_mib",
    "available_memory_mib",
    "PEAK_CONV_SHAPE",
    "PEAK_MATMUL_SIZE",
]

logger = logging.getLogger(__name__)

# the reference workloads: a ResNet-like 3x3 convolution and a square matmul
PEAK_CONV_SHAPE = (32, 64, 48, 64)  # N, C (in = out), H, W
PEAK_MATMUL_SIZE = 1024
# environment override of native_bfloat16(): "0" treats the CPU as without native bfloat16 (to
# measure the float32 path on a machine that has it), "1" as with it
NATIVE_BF16_ENV = "D2POSE_NATIVE_BF16"


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flag(name: str) -> Optional[bool]:
    """torch.cpu's private feature probes (PyTorch >= 2.1), None where this PyTorch lacks them."""
    fn = getattr(torch.cpu, f"_is_{name}_supported", None)
    if fn is None:
        return None
    try:
        return bool(fn())
    except Exception:  # pragma: no cover - depends on the PyTorch build
        return None


def cpu_capability() -> str:
    """PyTorch's CPU kernel capability ("AVX2", "AVX512", ...) plus what bfloat16 runs on:
    e.g. "AVX512 + AVX512_BF16 + AMX", "AVX2"."""
    base = torch.backends.cpu.get_cpu_capability()
    extras = [label for flag, label in (("avx512_bf16", "AVX512_BF16"), ("amx_tile", "AMX")) if _cpu_flag(flag)]
    return " + ".join([base] + extras)


@functools.lru_cache(maxsize=None)
def _measured_bfloat16_is_native() -> bool:
    """A short measurement (about 50 ms where bfloat16 is native): bfloat16 matmuls at least half as
    fast as float32 ones mean hardware support; emulated bfloat16 is 50-150x slower."""
    a = torch.randn(256, 256)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        torch.mm(x, x)
        t0 = time.perf_counter()
        for _ in range(3):
            torch.mm(x, x)
        rates[dtype] = time.perf_counter() - t0
    return rates[torch.bfloat16] <= 2.0 * rates[torch.float32]


def native_bfloat16() -> Tuple[bool, str]:
    """Whether this CPU runs bfloat16 natively, and why we think so.

    PyTorch's probes first (AVX512_BF16 or AMX: oneDNN's bfloat16 kernels); where this PyTorch has
    no probes (or on non-x86 CPUs), a short matmul measurement. `D2POSE_NATIVE_BF16=0/1` overrides.
    """
    env = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1", f"{NATIVE_BF16_ENV}={env}"
    if env:
        raise ValueError(f"{NATIVE_BF16_ENV} must be '0' or '1', got {env!r}")
    bf16, amx = _cpu_flag("avx512_bf16"), _cpu_flag("amx_tile")
    if bf16 or amx:
        return True, f"CPU capability {cpu_capability()}"
    if bf16 is False and amx is False and platform.machine() in ("x86_64", "AMD64"):
        return False, f"CPU capability {cpu_capability()} (no AVX512_BF16 or AMX: bfloat16 is emulated)"
    native = _measured_bfloat16_is_native()
    verdict = "at least half" if native else "less than half"
    return native, f"bfloat16 matmuls measured at {verdict} the float32 speed on {cpu_model()}"


def _best_time(fn, budget_s: float = 1.0, max_runs: int = 15) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    best, spent, runs = float("inf"), 0.0, 0
    while runs < max_runs and (runs == 0 or spent < budget_s):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best


def measure_peaks(dtype: torch.dtype = torch.float32, threads: Optional[int] = None) -> Dict[str, float]:
    """Measured GFLOP/s (2 FLOPs per multiply-add) on the CPU in `dtype` (float32 runs plainly;
    bfloat16 / float16 under torch.autocast, as the models do), best of repeated runs:

    * conv_default_gflops / conv_channels_last_gflops: a 3x3 convolution on PEAK_CONV_SHAPE in the
      default and the channels-last layout (oneDNN is often much faster in the latter);
    * conv_gflops: the better of the two (the machine's convolution peak);
    * matmul_gflops: a PEAK_MATMUL_SIZE^2 matmul.

    Takes about 2 s in float32; where bfloat16 is emulated a single run takes seconds, so fewer runs
    are made (about 25 s in all).
    """
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        N, C, H, W = PEAK_CONV_SHAPE
        n = PEAK_MATMUL_SIZE
        amp = dtype != torch.float32
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=amp):
            x = torch.randn(N, C, H, W)
            w = torch.randn(C, C, 3, 3)
            xc, wc = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
            default = _best_time(lambda: F.conv2d(x, w, padding=1))
            channels_last = _best_time(lambda: F.conv2d(xc, wc, padding=1))
            a, b = torch.randn(n, n), torch.randn(n, n)
            mm_time = _best_time(lambda: torch.mm(a, b))
        conv_flops = 2.0 * N * C * H * W * C * 9 / 1e9
        out = {"conv_default_gflops": conv_flops / default, "conv_channels_last_gflops": conv_flops / channels_last,
               "matmul_gflops": 2.0 * n ** 3 / mm_time / 1e9}
        out["conv_gflops"] = max(out["conv_default_gflops"], out["conv_channels_last_gflops"])
        return out
    finally:
        torch.set_num_threads(prev)


def describe_machine(dtype: torch.dtype = torch.float32, threads: Optional[int] = None,
                     peaks: Optional[Dict[str, float]] = None) -> str:
    """One paragraph for benchmark output: CPU model, capability, threads, precision and the measured
    peaks in that precision (measured here unless given)."""
    threads = threads or torch.get_num_threads()
    peaks = peaks or measure_peaks(dtype, threads)
    native, why = native_bfloat16()
    name = str(dtype).replace("torch.", "")
    return (f"machine: {cpu_model()} | capability {cpu_capability()} | native bfloat16: "
            f"{'yes' if native else 'no'} ({why}) | {threads} threads | precision {name} | measured peak "
            f"{peaks['conv_gflops']:.0f} GFLOP/s conv 3x3 {PEAK_CONV_SHAPE} (default layout "
            f"{peaks['conv_default_gflops']:.0f}, channels-last {peaks['conv_channels_last_gflops']:.0f}), "
            f"{peaks['matmul_gflops']:.0f} GFLOP/s matmul {PEAK_MATMUL_SIZE}^2 (2 FLOPs per multiply-add)")


def reset_peak_memory(device: str = "cpu") -> bool:
    """Starts a new peak-memory window: the process's peak resident set on the CPU (Linux: writing
    "5" to /proc/self/clear_refs resets VmHWM), the caching allocator's peak on CUDA. False where the
    peak cannot be reset (then `peak_memory_mib` reads the process's peak since it started)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    # some kernels (sandboxes among them) accept the write and keep the old peak: check that it moved
    status = _proc_status_mib(("VmHWM", "VmRSS"))
    return len(status) == 2 and status["VmHWM"] <= status["VmRSS"] + 64.0


def _proc_status_mib(keys) -> dict:
    """The named fields of /proc/self/status in MiB ({} where /proc is absent)."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in keys:
                    found[name] = int(line.split()[1]) / 1024.0
    except OSError:
        return {}
    return found


def peak_memory_mib(device: str = "cpu") -> float:
    """Peak memory since the last `reset_peak_memory`, in MiB: the process's peak resident set
    (VmHWM; ru_maxrss where /proc is absent) on the CPU, `torch.cuda.max_memory_allocated` on CUDA."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    status = _proc_status_mib(("VmHWM",))
    if status:
        return status["VmHWM"]
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def available_memory_mib(device: str = "cpu") -> float:
    """Memory a run may still take, in MiB: MemAvailable (Linux; else physical pages) plus what this
    process holds now on the CPU; free + cached-by-torch on CUDA."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return (free + torch.cuda.memory_reserved()) / 2**20
    own = 0.0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    own = int(line.split()[1]) / 1024.0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0 + own
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
