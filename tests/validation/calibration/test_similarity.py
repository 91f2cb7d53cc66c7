"""Issue 23, item 8 and the calibration rows of the figures beyond the margin ladder: split
supports are labelled descriptive, the Mantel text is true (p below 1/10 for 3 + 3 users once
the blocks carry noise), and `--study figures` gives one row of each new figure (CI's quick
calibration)."""

from __future__ import annotations

import itertools
import json

import numpy as np

from validation.calibrate import main
from validation.calibration.figures import FigureRow, calibrate_figures
from validation.exploratory.similarity import similarity_structure, support_note
from validation.stats.mantel import mantel


def _blocks(noise: float, rng: np.random.Generator) -> np.ndarray:
    g = np.array([0, 0, 0, 1, 1, 1])
    d = np.where(g[:, None] == g[None, :], 1.0, 3.0)
    e = rng.normal(0, noise, size=(6, 6))
    d = d + (e + e.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


def test_mantel_p_goes_below_one_tenth_with_noise_inside_the_blocks():
    rng = np.random.default_rng(0)
    exact = _blocks(0.0, rng)
    assert mantel(exact, exact).p_value == 72 / 720       # block-constant: the 72 block-keeping relabelings tie
    noisy = _blocks(0.2, rng)
    t = mantel(noisy, noisy)
    assert t.p_value < 0.1 and t.p_value == 1 / 720       # noise inside the blocks: down to 1/J!


def test_supports_are_labelled_descriptive():
    rng = np.random.default_rng(1)
    users = tuple(f"u{k}" for k in range(4))
    point = rng.normal(3.0, 0.1, size=(4, 4)) - 0.2 * np.eye(4)
    draws = point[None] + rng.normal(0, 0.01, size=(50, 4, 4))
    s = similarity_structure(users, point, draws, n_seeds=3)
    assert s.supports_descriptive and support_note(3) in s.notes
    assert "descriptive only: with 3 seeds" in support_note(3)
    assert s.to_json()["supports_descriptive"] is True
    none = similarity_structure(users, point, None)
    assert not none.supports_descriptive and not any("descriptive only" in n for n in none.notes)


def test_the_row_reads_its_target():
    cov = FigureRow("c", "d", 0.93, 400, 0.95, "coverage")          # se 0.0109: 0.93 >= 0.928
    assert cov.within and not FigureRow("c", "d", 0.92, 400, 0.95, "coverage").within
    fp = FigureRow("f", "d", 0.07, 400, 0.05, "false positive")     # se 0.0109: 0.07 <= 0.0718
    assert fp.within and not FigureRow("f", "d", 0.08, 400, 0.05, "false positive").within


def test_quick_figures_calibration_has_one_row_of_each_new_figure(tmp_path, capsys):
    res = calibrate_figures(n_experiments=4, n_resamples=60, regimes=("mixed",))
    figures = {r.figure for r in res.rows}
    assert {"margin coverage, 2 seeds", "margin coverage, one diverged seed: the affected user",
            "decomposition coverage: seen_user",
            "decomposition coverage: seen-user share, shown unlabelled",
            "decomposition coverage: seen-user share, every share shown (descriptive ones included)",
            "Mantel p: false positive"} <= figures
    assert all(0.0 <= r.value <= 1.0 for r in res.rows if r.n)
    again = calibrate_figures(n_experiments=4, n_resamples=60, regimes=("mixed",))
    assert [r.value for r in again.rows] == [r.value for r in res.rows]    # deterministic
    assert main(["--study", "figures", "--experiments", "2", "--resamples", "30", "--regime", "mixed",
                 "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "calibration_figures.json").read_text())
    assert doc["schema"] == "normadapt-calibration-figures/1" and len(doc["rows"]) == len(res.rows)
    assert "| Mantel p: false positive |" in capsys.readouterr().out
    assert main(["--study", "figures", "--users", "4"]) == 2
    assert "`--study figures` simulates its own designs" in capsys.readouterr().err


def test_exact_mantel_has_no_false_positive_beyond_alpha_on_exchangeable_nulls():
    """The permutation test is exact: over all relabelings of an unrelated matrix, the share of
    p <= 0.05 is at most 0.05 (here for one noisy block matrix against every relabeling of another)."""
    rng = np.random.default_rng(3)
    a, b = _blocks(0.3, rng), _blocks(0.3, rng)
    ps = [mantel(a[np.ix_(p, p)], b).p_value for p in itertools.islice(itertools.permutations(range(6)), 0, 720, 7)]
    assert np.mean(np.array(ps) <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / len(ps))
