"""Test-wide isolation: caches that t2i writes (attribute readers, caption embeddings) go to a temporary
folder, never to the user's ~/.cache/t2i."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("T2I_CACHE_DIR", str(tmp_path_factory.mktemp("t2i-cache")))
    yield
    mp.undo()
