"""The test session's cache (tests/conftest.py): no test writes into the user's cache."""

from __future__ import annotations

import os

from common.cache import CACHE_ENV, cache_root
from tests.support import examples


def test_every_test_sees_the_temporary_session_cache(session_cache, tmp_path_factory):
    assert os.environ[CACHE_ENV] == str(session_cache) and cache_root() == session_cache
    assert session_cache.is_relative_to(tmp_path_factory.getbasetemp())
    links = [p for p in (session_cache / "fixtures").iterdir() if p.is_symlink()]
    assert all(p.resolve().is_file() for p in links)  # the user's fetched corpora, read through links


def test_a_quick_calibration_lands_in_the_session_cache(session_cache):
    from validation.calibrate import calibration_for_study

    _, data = examples.full_study(seed=0, n_resamples=50)
    before = set((session_cache / "calibration").glob("*.json"))
    design, _ = calibration_for_study(data, n_experiments=7, n_resamples=50)
    assert design is not None and design.seeds == len(data.seeds)
    written = set((session_cache / "calibration").glob("*.json")) - before
    assert len(written) == 1, "the quick calibration must be cached in the session's directory"
