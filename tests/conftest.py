"""Fixtures for the cross-package tests (helpers to import are in t2i_test_helpers.py)."""

import pytest


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Every test starts with freshly loaded plugins, and leaves none of its in-memory ones behind."""
    from t2i import plugins

    plugins.reset()
    yield
    plugins.reset()
