"""Shared pytest fixtures and helpers for the d2pose test-suite."""
import os

import pytest
import torch

# keep the suite's thread count predictable on small CI machines
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = os.path.abspath(
    os.environ.get("D2POSE_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
)


@pytest.fixture(scope="session")
def shared_data():
    """Path of the real keypoint samples (../shared/data); skips when they are absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA
