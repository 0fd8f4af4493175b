"""pytest fixtures for plugin test suites. Import one into a test module to use it there::

    from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: applies to the module)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

__all__ = ["one_intra_op_thread"]


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread() -> Iterator[None]:
    """Run the module's tests with one intra-op thread, restored afterwards. Networks at test widths are
    several times faster so on a busy small machine: two threads spin-wait on a core another process holds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
