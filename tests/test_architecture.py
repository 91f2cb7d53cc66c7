"""The architecture, checked on the import graph rather than by reading files: the layers and the
standard-library-only data contract are import-linter contracts (pyproject.toml; `make lint` runs
them), and no two modules import each other, directly or round a longer loop
(`tests.support.import_cycles`, also run by `make lint`). docs/architecture.md describes both."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import module_sizes
from tests.support.import_cycles import PACKAGES, circles, import_graph, loop_through, main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONTRACTS = {c["name"]: c for c in PYPROJECT["tool"]["importlinter"]["contracts"]}
# distribution name -> import name, where the two differ by more than `-` for `_`
IMPORT_NAMES = {"vl-convert-python": "vl_convert", "import-linter": "importlinter"}


def contract(words: str) -> dict:
    (found,) = [c for name, c in CONTRACTS.items() if words in name]
    return found


def test_the_import_linter_contracts_hold():
    r = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                        "lint_imports_command()", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in r.stdout


def test_reports_draw_and_validation_computes():
    """What the report's hand-written glob tests checked, now for every module at any depth."""
    reports = contract("reports render")
    assert {"numpy", "scipy", "statsmodels", "torch"} <= set(reports["forbidden_modules"])
    validation = contract("validation library never imports")
    assert {"jinja2", "altair", "vl_convert", "torch", "reports", "runners"} <= set(validation["forbidden_modules"])
    assert validation["ignore_imports"] == ["validation.verdict -> reports"]


def declared_import_names() -> set[str]:
    project = PYPROJECT["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    names = {re.match(r"[A-Za-z0-9_.-]+", s).group(0).lower() for s in specs}
    return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}


def test_the_data_contract_forbids_every_declared_dependency():
    """`validation.contract.prereg` and `validation.contract.manifest` (the runner may import them) need the standard
    library only: the contract forbids every third-party package the project declares, so a new
    dependency cannot slip in through them unnoticed."""
    data_contract = contract("data contract (validation.contract")
    assert data_contract["source_modules"] == ["validation.contract"]
    missing = declared_import_names() - set(data_contract["forbidden_modules"])
    assert not missing, f"add {sorted(missing)} to the data contract's forbidden_modules in pyproject.toml"
    assert {"fixtures", "runners", "reports"} <= set(data_contract["forbidden_modules"])


def test_the_data_contract_imports_without_third_party_packages():
    code = ("import builtins, sys\nreal = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in sys.argv[1:]:\n"
            "        raise ImportError(f'{name} imported')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\nimport validation.contract.prereg, validation.contract.manifest\n")
    r = subprocess.run([sys.executable, "-c", code, *sorted(declared_import_names())], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_import_circle_between_the_projects_modules(capsys):
    graph = import_graph()
    assert len(graph) > 50 and {"validation.inputs.load", "validation.contract.prereg", "reports.page"} <= set(graph)
    assert circles(graph) == []
    assert main([]) == 0
    assert f"no import circle among the {len(graph)} modules of {', '.join(PACKAGES)}" in capsys.readouterr().out


def test_circles_and_their_loops():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert circles(graph) == [["a", "b", "c"], ["e"]]
    assert loop_through(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert loop_through(graph, ["e"]) == ["e", "e"]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_a_lazy_import_that_closes_a_circle_is_found(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "circled"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from circled.high import g\n    return g\n")
    (pkg / "high.py").write_text("from circled.low import f\n\ndef g():\n    return f\n")
    (pkg / "alone.py").write_text("import json\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert circles(import_graph(["circled"])) == [["circled.high", "circled.low"]]
    assert main(["circled"]) == 1
    err = capsys.readouterr().err
    assert "import circle of 2 modules: circled.high -> circled.low -> circled.high" in err


@pytest.mark.parametrize("module", ["validation.inputs.load", "validation.judgment.results"])
def test_public_names_still_import_from_their_old_modules(module):
    """The circles were broken by moving definitions (validation.inputs.tables, validation.contract.status);
    every name importable before still is."""
    names = {"validation.inputs.load": ["InputError", "KEY", "CONTROLS", "normalize_cells", "read_table",
                                        "check_duplicates", "check_structure", "check_loo_controls", "load_external",
                                        "load_run", "resolve_run"],
             "validation.judgment.results": ["PreregStatus", "Status", "Verdict"]}[module]
    mod = __import__(module, fromlist=names)
    assert all(hasattr(mod, n) for n in names)


def test_validations_stages_are_layers_naming_every_sub_package():
    """The stages of validation/ are one import-linter `layers` contract (exhaustive: a new stage
    must be placed in it), top to bottom: the two commands, calibration, the never-gating
    analyses, the judgment, statistics, inputs, the data contract."""
    layers = contract("validation's stages")
    assert layers["type"] == "layers" and layers["containers"] == ["validation"] and layers["exhaustive"]
    named = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    on_disk = {p.stem if p.is_file() else p.name for p in (ROOT / "validation").iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert named == on_disk
    assert layers["layers"][-1] == "contract" and layers["layers"][-2] == "inputs"


def test_no_module_or_folder_of_the_packages_is_over_its_size(capsys):
    assert module_sizes.oversized(ROOT) == []
    assert module_sizes.main([]) == 0
    assert not module_sizes.EXEMPT   # an exemption is a debt: do not add one lightly


def test_an_oversized_module_and_a_crowded_folder_are_named(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "long.py").write_text("x = 1\n" * 451)
    (pkg / "fits.py").write_text("x = 1\n" * 450)
    for k in range(17):
        (pkg / "sub" / f"m{k}.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    problems = module_sizes.oversized(tmp_path, ["pkg"], exempt={})
    assert problems == ["pkg/long.py: 451 lines (at most 450): split it along its ideas",
                        "pkg/sub/: 17 modules (at most 16): split it into sub-packages by idea"]
    assert module_sizes.oversized(tmp_path, ["pkg"], exempt={"pkg/long.py": "why"}) == [problems[1]]
    assert module_sizes.main(["pkg"], root=tmp_path) == 1
    assert "pkg/long.py: 451 lines" in capsys.readouterr().err


def test_every_lazy_export_of_validation_resolves():
    """`from validation import X` for every name of `validation.__all__`: each names its home module."""
    import validation

    missing = [name for name in validation.__all__ if getattr(validation, name, None) is None]
    assert missing == []
