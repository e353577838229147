"""`import d2pose` prints no warning about code a user cannot change: the two `torch.jit.script`
FutureWarnings of fvcore.nn's focal losses and Detectron2 model_zoo's `pkg_resources` UserWarning are
silenced for those imports only; a user's own warnings of the same kind still show."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import warnings
import d2pose
import torch
warnings.warn("`torch.jit.script` is deprecated (the user's own)", FutureWarning)
'''


def test_import_prints_no_torch_jit_script_warning():
    run = subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    jit = [line for line in run.stderr.splitlines() if "FutureWarning" in line and "torch.jit.script" in line]
    assert len(jit) == 1 and "(the user's own)" in jit[0], run.stderr  # the filter is d2pose's imports' only
    assert "pkg_resources is deprecated" not in run.stderr, run.stderr
