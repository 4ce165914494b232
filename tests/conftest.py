"""Test set-up. Triton kernels run under the CPU interpreter: this must be set before any
``triton.jit`` decorator runs, so it is the first thing the test session does."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import DATA

# Under pytest-xdist (`-n 2`) each worker gets its share of the cores: OpenMP threads of two
# workers competing for the same cores wait for each other.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    return DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
