"""`--model`: a checkpoint never runs its own code (issue 22).

A directory whose `config.json` or `tokenizer_config.json` has an `auto_map` naming a module of its
own is refused (exit 2, naming the `auto_map` entry and the file) before transformers reads it, even
when "y" reaches transformers' prompt; the payload module must not be imported. No message advises
`trust_remote_code=True`, a flag the suite does not have.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from runners.hf import load as hf_load  # noqa: E402
from runners.hf.load import HFModelError, load_checkpoint  # noqa: E402
from runners.hf.tiny import save_tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
FAST = ["--fixture-set", "synthetic", "--seeds", "1", "--steps", "3", "--fixtures", "2", "--batch-size", "2", "-q"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("llama"), ctx=64)


def _evil(good: Path, tmp_path: Path, where: str) -> tuple[Path, Path]:
    """A copy of `good` whose `where` file maps an Auto class to `evil.py` in the directory; importing
    evil.py writes the marker file."""
    m = Path(shutil.copytree(good, tmp_path / "m"))
    marker = tmp_path / "PAYLOAD_RAN"
    (m / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                               "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n"
                               "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    doc = json.loads((m / where).read_text())
    if where == "config.json":
        doc["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    else:
        doc["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (m / where).write_text(json.dumps(doc))
    return m, marker


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_the_grid_refuses_a_checkpoint_with_its_own_code_even_when_y_is_answered(good, tmp_path, where):
    m, marker = _evil(good, tmp_path, where)
    prereg = tmp_path / "prereg.toml"
    prereg.write_text("[criteria]\n")
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "runners.grid", "--model", str(m), *FAST, "--out", str(out),
                        "--prereg", str(prereg)], cwd=REPO, input="y\n", capture_output=True, text=True,
                       timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "auto_map" in r.stderr and where in r.stderr and "evil" in r.stderr, r.stderr
    assert "never runs" in r.stderr and "Traceback" not in text
    assert "trust_remote_code=True" not in text
    assert not marker.exists(), "the checkpoint's own code ran"
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir())


@pytest.mark.parametrize("field", ["config.json", "tokenizer_config.json"])
def test_a_custom_tokenizer_class_in_the_directory_is_refused(good, tmp_path, field):
    m, marker = _evil(good, tmp_path, "config.json")
    cfg = json.loads((m / "config.json").read_text())
    cfg.pop("auto_map")
    (m / "config.json").write_text(json.dumps(cfg))
    doc = json.loads((m / field).read_text())
    doc["tokenizer_class"] = "evil.EvilTokenizer"
    (m / field).write_text(json.dumps(doc))
    with pytest.raises(HFModelError, match=r"tokenizer_class.*evil\.EvilTokenizer.*never runs"):
        load_checkpoint(m)
    assert not marker.exists()


def test_the_load_refuses_in_process_with_a_yes_on_the_prompt(good, tmp_path, monkeypatch):
    m, marker = _evil(good, tmp_path, "config.json")
    monkeypatch.setattr("builtins.input", lambda *a: "y")
    with pytest.raises(HFModelError) as e:
        load_checkpoint(m)
    msg = str(e.value)
    assert "`auto_map`" in msg and "AutoConfig" in msg and "evil.EvilConfig" in msg
    assert str(m / "config.json") in msg and "evil.py" in msg
    assert not marker.exists()


def test_every_read_passes_trust_remote_code_false(good, monkeypatch):
    """Belt and braces: each transformers entry point the loader calls gets trust_remote_code=False."""
    seen = []
    for name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained

        def spy(*a, _real=real, _name=name, **kw):
            seen.append((_name, kw.get("trust_remote_code", "absent")))
            return _real(*a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    load_checkpoint(good)
    assert {n for n, _ in seen} == {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"}
    assert all(v is False for _, v in seen), seen


def test_a_transformers_refusal_never_advises_trust_remote_code(good, monkeypatch):
    def refuse(*a, **kw):
        raise ValueError("The repository x contains custom code which must be executed to correctly load the "
                         "model.\nPlease pass the argument `trust_remote_code=True` to allow custom code to be run.")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    with pytest.raises(HFModelError) as e:
        hf_load.check_dir(good)
    assert "trust_remote_code=True" not in str(e.value) and "never runs" in str(e.value)
