"""Shared test helpers: device parametrisation with a clean CUDA skip."""

from __future__ import annotations

import pytest
import torch

CUDA_AVAILABLE = torch.cuda.is_available()

#: Mark a test that needs a CUDA GPU; it is skipped cleanly where there is none.
requires_cuda = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA GPU")

#: ``@pytest.mark.parametrize("device", DEVICES)`` runs a test on CPU and, where available, CUDA.
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests solve small problems, where intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, so its data does not depend on test order."""
    torch.manual_seed(0)
    yield
