"""Shared pytest fixtures and helpers for the d2pose test-suite."""
import os

import pytest
import torch

# keep the suite's thread count predictable on small CI machines
torch.set_num_threads(min(2, os.cpu_count() or 1))

_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
SHARED_DATA = os.path.abspath(os.environ.get("D2POSE_SHARED_DATA", os.path.join(_SHARED, "data")))
PARITY_DATA = os.path.abspath(os.environ.get("D2POSE_PARITY_DATA", os.path.join(_SHARED, "reference", "parity")))
# training-parity fixtures (the authors' targets, losses and gradients): see tests/train_parity.py
TRAIN_PARITY_DATA = os.path.abspath(
    os.environ.get("D2POSE_TRAIN_PARITY_DATA", os.path.join(_SHARED, "reference", "train_parity")))


@pytest.fixture(scope="session")
def shared_data():
    """Path of the real keypoint samples (../shared/data); skips when they are absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def parity_data():
    """Path of the parity fixtures (the authors' code run on fixed inputs and weights,
    ../shared/reference/parity); skips when they are absent."""
    if not os.path.isdir(PARITY_DATA):
        pytest.skip(f"parity fixtures not found at {PARITY_DATA}")
    return PARITY_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors (with the CPU busy, two threads make every
    small op wait at an OpenMP barrier, ~100x the ops' own compute); restored afterwards. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_safeguards():
    """Detectron2's and yacs' classes as shipped (what D2POSE_NO_SAFEGUARDS=1 gives), for one test."""
    import d2pose
    from d2pose.safeguards import installed

    was = installed()
    d2pose.uninstall_safeguards()
    try:
        yield
    finally:
        if was:
            d2pose.install_safeguards()
