"""Fixtures shared by the test modules.

No test writes into the user's cache (`~/.cache/normadapt` or `$NORMADAPT_CACHE_DIR`): for the
whole session `NORMADAPT_CACHE_DIR` points at a temporary directory, inherited by the commands
the end-to-end tests run as subprocesses. Two things keep those tests as fast as before:
- `fixtures/`: links to the corpora the user has already fetched (each pinned by its SHA-256 and
  verified on read; a rewrite replaces the link, never the user's file), so nothing is downloaded
  again;
- `base-models/`: pytest's own cache (`.pytest_cache/d/normadapt-base-models`, in the checkout),
  so the tiny base models the tests pretrain are built once, not once per session. Entries are
  keyed by configuration and corpus hash and verified by SHA-256 on load.
Calibrations, leakage tables and everything else are written into the temporary directory only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.cache import CACHE_ENV, cache_root


def _link_files(src: Path, dst: Path) -> None:
    """`dst/<name>` -> `src/<name>` for every plain file directly in `src` (none if it is absent)."""
    dst.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        for f in src.iterdir():
            if f.is_file():
                (dst / f.name).symlink_to(f.resolve())


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory, request) -> Path:
    """The cache root every test (and every command a test runs) sees; see the module docstring."""
    user_cache = cache_root()
    root = tmp_path_factory.mktemp("normadapt-cache")
    _link_files(user_cache / "fixtures", root / "fixtures")
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`
    if cache is not None:
        (root / "base-models").symlink_to(cache.mkdir("normadapt-base-models"), target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root


@pytest.fixture
def cache_env(session_cache) -> Path:
    """The session's cache root (already `$NORMADAPT_CACHE_DIR` for every test)."""
    return session_cache
