"""Tests of the machine facts and measured peaks that benchmarks print (d2pose.utils.machine)."""
import torch

from d2pose.utils import machine


def test_cpu_facts():
    assert machine.cpu_model()
    cap = machine.cpu_capability()
    assert cap.split(" + ")[0] == torch.backends.cpu.get_cpu_capability()


def test_measure_peaks_and_description():
    peaks = machine.measure_peaks(torch.float32, threads=1)
    assert set(peaks) == {"conv_gflops", "conv_default_gflops", "conv_channels_last_gflops", "matmul_gflops"}
    assert peaks["conv_gflops"] == max(peaks["conv_default_gflops"], peaks["conv_channels_last_gflops"])
    # any x86 core of the last decade does more than 1 GFLOP/s in float32, and none 10 TFLOP/s
    assert all(1.0 < v < 1e4 for v in peaks.values()), peaks
    text = machine.describe_machine(torch.float32, threads=1, peaks=peaks)
    for part in (machine.cpu_model(), machine.cpu_capability(), "1 threads", "precision float32",
                 f"{peaks['conv_gflops']:.0f} GFLOP/s conv", f"{peaks['matmul_gflops']:.0f} GFLOP/s matmul"):
        assert part in text, (part, text)
    assert torch.get_num_threads() >= 1  # restored


def test_peak_memory_window_sees_a_large_allocation():
    import numpy as np

    from d2pose.utils.machine import available_memory_mib, peak_memory_mib, reset_peak_memory

    resettable = reset_peak_memory()
    before = peak_memory_mib()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    after = peak_memory_mib()
    del block
    assert after >= before + 250
    if resettable:  # the window starts again at the current resident set, below the peak just seen
        reset_peak_memory()
        assert peak_memory_mib() < after - 200
    assert available_memory_mib() > 300
