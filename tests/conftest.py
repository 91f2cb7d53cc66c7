"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("normadapt-cache")


@pytest.fixture
def cache_env(session_cache, monkeypatch) -> Path:
    """Base models are cached once per test session, outside the user's cache."""
    monkeypatch.setenv("NORMADAPT_CACHE_DIR", str(session_cache))
    return session_cache
