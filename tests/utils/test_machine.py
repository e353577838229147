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
    """In a fresh process (small peak), a 300 MiB block raises the peak whether or not the kernel lets
    the window be reset; in this process the window starts again only where the reset took effect."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from d2pose.utils.machine import peak_memory_mib\n"
        "before = peak_memory_mib()\n"
        "block = np.ones(300 * 2**20 // 8)\n"
        "print(before, peak_memory_mib())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert after >= before + 250, out.stdout

    import numpy as np

    from d2pose.utils.machine import available_memory_mib, peak_memory_mib, reset_peak_memory

    if reset_peak_memory():
        start = peak_memory_mib()
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        high = peak_memory_mib()
        del block
        assert high >= start + 250
        reset_peak_memory()  # the window starts again at the current resident set, below that peak
        assert peak_memory_mib() < high - 200
    assert available_memory_mib() > 300


def test_reset_reports_a_kernel_that_keeps_the_old_peak(monkeypatch):
    """A kernel that accepts the clear_refs write but keeps VmHWM (seen in sandboxes) is reported as
    not resettable, so benchmarks do not print a whole-process peak as a window's peak."""
    monkeypatch.setattr(machine, "_proc_status_mib", lambda keys: {"VmHWM": 3528.0, "VmRSS": 900.0})
    assert machine.reset_peak_memory() is False
    monkeypatch.setattr(machine, "_proc_status_mib", lambda keys: {"VmHWM": 901.0, "VmRSS": 900.0})
    assert machine.reset_peak_memory() in (True, False)  # True where /proc/self/clear_refs is writable
