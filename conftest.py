"""Test-wide isolation: caches that t2i writes (attribute readers, caption embeddings) go to a temporary
folder, never to the user's ~/.cache/t2i."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("T2I_CACHE_DIR", str(tmp_path_factory.mktemp("t2i-cache")))
    yield
    mp.undo()


def pytest_configure(config):
    """One compute thread per xdist worker (``make test`` runs one worker per core): with torch's default of a
    thread per core in every worker, the workers' OpenMP pools fight over the cores and spin. Measured on the
    2-core CI VM, the stylegan + clipd plugin tests took 101 s (88 CPU-s) with 2 threads a worker, 82 s (55) with
    1. Subprocesses the tests start (CLI runs, torchrun) inherit it through the environment."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
