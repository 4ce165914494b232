"""The port compares with TorchMD-Net: without it installed there is nothing to run."""

import importlib.util

import pytest
import torch

collect_ignore_glob = [] if importlib.util.find_spec("torchmdnet") else ["test_*.py"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread_per_module():
    """Small models gain nothing from threads, and on a busy machine OpenMP threads wait for
    each other (tests/conftest.py's ``one_thread``, for module-scoped model builds too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
