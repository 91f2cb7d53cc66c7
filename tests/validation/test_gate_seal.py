"""A sealed run (docs/gate.md, section 4): the verdict judges what the runner produced.

Each attack of issue #22 on a finished run, made here on a real (tiny) run: editing the manifest,
deleting or replacing docs.parquet, keeping the best seeds, the best documents or the passing users,
copying another run's tables, relabelling the step count, swapping adapter files, removing the seal.
Every one fails closed: exit 2 naming the file and the fact (or exit 1), never exit 0 and never
"pre-registered". A forger who also re-hashes the seal's file list is caught by the facts; one who
rewrites every record is caught only by a signature (`$NORMADAPT_SEAL_KEY`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from common import seal as sealing
from common.hashing import sha256_file
from common.lock import RunLock
from runners import grid
from validation.verdict import main

ROOT = Path(__file__).resolve().parents[1]  # tests/
FAST = ["--no-calibration", "--no-report"]
GRID = ["--preset", "tiny", "--fixture-set", "synthetic", "--fixtures", "3", "--steps", "6", "-q"]


def _prereg(folder: Path, primary: int = 6) -> Path:
    path = folder / f"prereg-{primary}.toml"
    text = (ROOT / "data" / "prereg_fast.toml").read_text().replace("primary = 100", f"primary = {primary}")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Two real runs of the tiny grid (2 seeds, 3 users, 6 steps), each sealed by the runner: one
    signed with a key, one not; and the prereg file they were made with."""
    root = tmp_path_factory.mktemp("sealed")
    prereg = _prereg(root)
    runs = {}
    for name, seeds, key in (("plain", "2", None), ("signed", "3", "ci-secret")):
        env = dict(os.environ)
        os.environ.pop(sealing.KEY_ENV, None)
        if key:
            os.environ[sealing.KEY_ENV] = key
        try:
            assert grid.main([*GRID, "--seeds", seeds, "--out", str(root / name), "--prereg", str(prereg)]) == 0
        finally:
            os.environ.clear()
            os.environ.update(env)
        runs[name] = (root / name / "latest").resolve()
    return {"prereg": prereg, **runs}


@pytest.fixture
def run(made, tmp_path) -> Path:
    """A private copy of the unsigned run."""
    return Path(shutil.copytree(made["plain"], tmp_path / made["plain"].name))


def _verdict(run: Path, prereg: Path, *extra: str) -> int:
    return main(["--run", str(run), "--prereg", str(prereg), *FAST, *extra])


def _reseal(run: Path, **fact_changes) -> None:
    """What a forger who knows the format does: re-hash every file (and rewrite facts)."""
    facts = {**sealing.read_seal(run).facts, **fact_changes}
    sealing.write_seal(run, facts)


def test_the_runner_seals_every_file_and_the_facts(made):
    run = made["plain"]
    s = sealing.read_seal(run)
    assert {"cells.parquet", "docs.parquet", "manifest.json", "config.json", "prereg.json",
            "seeds/seed-0/done.json", "adapters/seed-1/user2.safetensors"} <= set(s.files)
    assert all(sha256_file(run / rel) == digest for rel, digest in s.files.items())
    assert s.facts["seeds"] == [0, 1] and s.facts["steps"] == [6] and s.facts["users"] == ["user1", "user2", "user3"]
    docs = pl.read_parquet(run / "docs.parquet")
    for user, ids in s.facts["heldout"].items():
        assert sorted(ids) == sorted(docs.filter(pl.col("eval") == user)["doc_id"].unique().to_list())
    assert not (run / sealing.SIGNATURE_FILE).exists()


def test_an_intact_run_is_judged_pre_registered(run, made, capsys):
    code = _verdict(run, made["prereg"])
    assert code in (0, 1)
    v = json.loads((run / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "pre-registered"
    assert v["preregistration"]["seal"]["sealed"] is True
    assert v["preregistration"]["seal"]["sha256"] == sha256_file(run / sealing.SEAL_FILE)


def _refused(run: Path, prereg: Path, capsys, *needles: str, extra: tuple[str, ...] = ()) -> str:
    before = (run / "verdict.json").exists()
    assert _verdict(run, prereg, *extra) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)
    assert (run / "verdict.json").exists() == before  # nothing written
    return err


def test_an_edited_manifest_is_refused(run, made, tmp_path, capsys):
    looser = tmp_path / "looser.toml"
    looser.write_text(made["prereg"].read_text().replace('lenient = ["PASS"]', 'lenient = ["PASS", "FAIL"]'))
    m = json.loads((run / "manifest.json").read_text())
    m["prereg"] = {"path": str(looser), "sha256": sha256_file(looser)}  # settings deleted too
    (run / "manifest.json").write_text(json.dumps(m))
    _refused(run, looser, capsys, "manifest.json", "changed after the run was sealed")
    # ... and a forger who re-hashes the seal (and its prereg fact) meets the runner's other records
    _reseal(run, prereg_sha256=sha256_file(looser), prereg_settings=None)
    _refused(run, looser, capsys, "config.json", "prereg_sha256")


def test_docs_parquet_deleted_or_replaced_never_falls_back_to_seeds_only(run, made, capsys):
    docs = run / "docs.parquet"
    docs.unlink()
    _refused(run, made["prereg"], capsys, "docs.parquet", "missing")
    docs.mkdir()
    _refused(run, made["prereg"], capsys, "docs.parquet", "folder, FIFO or device")
    docs.rmdir()
    os.mkfifo(docs)  # must not hang on reading it
    _refused(run, made["prereg"], capsys, "docs.parquet", "folder, FIFO or device")
    docs.unlink()
    _reseal(run)  # the forger re-hashes without docs.parquet: the run scored every document
    _refused(run, made["prereg"], capsys, "docs.parquet", "is not sealed")
    _reseal(run, per_document=False)  # ... and says so in the seal
    _refused(run, made["prereg"], capsys, "per_document", "seeds-only")


@pytest.mark.parametrize("record", ["config.json", "seeds/seed-1/done.json", "manifest.json"])
def test_a_record_removed_and_the_seal_remade_is_refused(run, made, capsys, record):
    """Without its records a re-made seal would switch its own cross-checks off: every seal the
    runner writes lists them, so one that does not was not made by the runner."""
    from runners.rundir import cells_from_docs, with_rates
    docs = pl.read_parquet(run / "docs.parquet")
    diag = pl.col("adapter") == pl.col("eval")
    docs = with_rates(docs.with_columns(pl.when(diag).then(pl.col("nll_sum") * 0.7).otherwise(pl.col("nll_sum"))
                                        )).select(docs.columns)
    docs.write_parquet(run / "docs.parquet")
    cells_from_docs(docs).write_parquet(run / "cells.parquet")
    (run / record).unlink()
    _reseal(run)
    _refused(run, made["prereg"], capsys, record, "is not sealed")


def _rewrite_tables(run: Path, keep) -> None:
    """Filter docs.parquet with `keep` and re-sum cells.parquet from what is left."""
    from runners.rundir import cells_from_docs
    docs = pl.read_parquet(run / "docs.parquet").filter(keep)
    docs.write_parquet(run / "docs.parquet")
    cells_from_docs(docs).write_parquet(run / "cells.parquet")


@pytest.mark.parametrize("keep, fact", [
    (pl.col("seed") == 0, "seeds"),                                             # the best seed only
    ((pl.col("eval") != "user3") & ~pl.col("adapter").is_in(["user3", "loo:user3"]), "users"),  # a user dropped
    (pl.col("doc_id").rank("dense").over(["seed", "steps", "adapter", "eval"]) <= 2,  # the best documents
     "held-out document ids"),
])
def test_cherry_picked_tables_are_refused(run, made, capsys, keep, fact):
    _rewrite_tables(run, keep)
    _refused(run, made["prereg"], capsys, "cells.parquet", "changed after the run was sealed")
    _reseal(run)
    _refused(run, made["prereg"], capsys, fact, "disagrees with the seal")


def test_a_rescaled_table_resealed_disagrees_with_the_seeds_records(run, made, capsys):
    """A forger who edits numbers only (every fact intact) and re-hashes the seal: the run's
    docs.parquet is no longer the per-seed tables that each seed's done.json vouches for."""
    from runners.rundir import cells_from_docs, with_rates
    docs = pl.read_parquet(run / "docs.parquet")
    diag = pl.col("adapter") == pl.col("eval")
    docs = with_rates(docs.with_columns(pl.when(diag).then(pl.col("nll_sum") * 0.5).otherwise(pl.col("nll_sum"))
                                        .alias("nll_sum"))).select(docs.columns)
    docs.write_parquet(run / "docs.parquet")
    cells_from_docs(docs).write_parquet(run / "cells.parquet")
    _reseal(run)
    _refused(run, made["prereg"], capsys, "docs.parquet", "is not the seeds' document tables")
    # ... and rewriting a seed's own table too breaks the hash its done.json recorded
    shutil.copy(run / "docs.parquet", run / "seeds/seed-0/docs.parquet")
    _reseal(run)
    _refused(run, made["prereg"], capsys, "done.json", "SHA-256 of `seeds/seed-0/docs.parquet`")


def test_another_runs_tables_copied_in_are_refused(run, made, capsys):
    for name in ("cells.parquet", "docs.parquet"):
        shutil.copy(made["signed"] / name, run / name)
    _refused(run, made["prereg"], capsys, "changed after the run was sealed")
    _reseal(run)
    _refused(run, made["prereg"], capsys, "seeds", "disagrees with the seal")


def test_a_relabelled_step_count_is_refused(run, made, capsys, tmp_path):
    prereg100 = _prereg(tmp_path, 100)
    for name in ("cells.parquet", "docs.parquet"):
        t = pl.read_parquet(run / name)
        t.with_columns(pl.lit(100, pl.Int64).alias("steps")).write_parquet(run / name)
    _refused(run, prereg100, capsys, "changed after the run was sealed", extra=("--allow-prereg-change",))
    _reseal(run)
    _refused(run, prereg100, capsys, "step counts", "[100]", extra=("--allow-prereg-change",))


def test_a_relabelled_status_is_refused(run, made, capsys):
    docs = pl.read_parquet(run / "docs.parquet")
    flip = (pl.col("adapter") == "user1") & (pl.col("seed") == 0)
    docs.with_columns(pl.when(flip).then(pl.lit("worse_than_base")).otherwise(pl.col("status")).alias("status")
                      ).write_parquet(run / "docs.parquet")
    _reseal(run)
    _refused(run, made["prereg"], capsys, "done.json", "status")


def test_adapter_files_overwritten_or_swapped_are_refused(run, made, capsys):
    a, b = run / "adapters/seed-0/user1.safetensors", run / "adapters/seed-0/user2.safetensors"
    tmp = a.with_suffix(".x")
    a.rename(tmp), b.rename(a), tmp.rename(b)
    _refused(run, made["prereg"], capsys, "user1.safetensors", "changed after the run was sealed")
    a.write_bytes(b"\0" * 10)
    _refused(run, made["prereg"], capsys, "user1.safetensors")


def test_a_file_added_after_the_seal_is_refused(run, made, capsys):
    shutil.copy(run / "adapters/seed-0/user1.safetensors", run / "adapters/seed-0/user9.safetensors")
    _refused(run, made["prereg"], capsys, "user9.safetensors", "added after the run was sealed")


def test_a_runner_made_directory_without_its_seal_is_refused(run, made, capsys):
    (run / sealing.SEAL_FILE).unlink()
    _refused(run, made["prereg"], capsys, "seal.json", "missing", "runners.grid")


def test_a_hand_made_folder_is_judged_not_pre_registered(run, made, capsys):
    for p in list(run.iterdir()):
        if p.name not in ("cells.parquet", "docs.parquet", "manifest.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert _verdict(run, made["prereg"]) == 1
    v = json.loads((run / "verdict.json").read_text())
    assert v["preregistration"]["status"] == "NOT PRE-REGISTERED"
    assert "not sealed" in v["preregistration"]["note"]
    assert _verdict(run, made["prereg"], "--require-signature") == 2


def test_a_rerun_of_the_grid_seals_again(run, made, capsys):
    """The fix the refusals name: the same command resumes, keeps the verified seeds, re-seals."""
    (run / sealing.SEAL_FILE).unlink()
    out = run.parent
    assert grid.main([*GRID, "--seeds", "2", "--out", str(out), "--prereg", str(made["prereg"])]) == 0
    assert sealing.read_seal(run).files
    assert _verdict(run, made["prereg"]) in (0, 1)


def test_a_signed_seal_is_verified_and_a_rewritten_one_is_caught(made, tmp_path, capsys, monkeypatch):
    run = Path(shutil.copytree(made["signed"], tmp_path / made["signed"].name))
    assert (run / sealing.SIGNATURE_FILE).is_file()
    monkeypatch.setenv(sealing.KEY_ENV, "ci-secret")
    assert _verdict(run, made["prereg"], "--require-signature") in (0, 1)
    assert json.loads((run / "verdict.json").read_text())["preregistration"]["seal"]["signature"].startswith(
        "verified")
    # a forger rewrites a table and every record, but has no key
    _rewrite_tables(run, pl.col("seed") == 0)
    _reseal(run, seeds=[0])
    (run / sealing.SIGNATURE_FILE).write_text((made["signed"] / sealing.SIGNATURE_FILE).read_text())
    _refused(run, made["prereg"], capsys, "does not match its signature")
    monkeypatch.setenv(sealing.KEY_ENV, "another key")
    _refused(run, made["prereg"], capsys, "another key")
    monkeypatch.delenv(sealing.KEY_ENV)
    _refused(run, made["prereg"], capsys, "--require-signature", sealing.KEY_ENV, extra=("--require-signature",))


def test_a_grid_with_the_key_never_signs_seeds_it_did_not_write(run, made, capsys, monkeypatch, caplog):
    """A run directory planted (or restored from a cache) with forged per-seed records: a grid that
    holds the key redoes every seed whose records it did not sign, so its seal never vouches for them."""
    genuine = pl.read_parquet(run / "docs.parquet")
    seed_docs = run / "seeds/seed-0/docs.parquet"
    t = pl.read_parquet(seed_docs)
    t.with_columns(pl.when(pl.col("adapter") == pl.col("eval")).then(pl.col("nll_sum") * 0.5)
                   .otherwise(pl.col("nll_sum"))).write_parquet(seed_docs)
    done = json.loads((run / "seeds/seed-0/done.json").read_text())
    done["files"]["seeds/seed-0/docs.parquet"] = sha256_file(seed_docs)  # the forger fixes the record
    (run / "seeds/seed-0/done.json").write_text(json.dumps(done))
    for name in ("seal.json", "cells.parquet", "docs.parquet"):
        (run / name).unlink()
    monkeypatch.setenv(sealing.KEY_ENV, "ci-secret")
    caplog.set_level("WARNING")
    assert grid.main([*GRID, "--seeds", "2", "--out", str(run.parent), "--prereg", str(made["prereg"])]) == 0
    assert "not signed with the key" in caplog.text
    assert pl.read_parquet(run / "docs.parquet").equals(genuine)  # both seeds redone: the forgery is gone
    assert (run / "seeds/seed-0/done.json.sig").is_file()
    caplog.clear()
    caplog.set_level("INFO")
    assert grid.main([*GRID, "--seeds", "2", "--out", str(run.parent), "--prereg", str(made["prereg"])]) == 0
    assert "not signed" not in caplog.text and "already done, kept" in caplog.text  # its own seeds are kept
    assert _verdict(run, made["prereg"], "--require-signature") in (0, 1)


def test_an_unsigned_run_fails_require_signature(run, made, capsys, monkeypatch):
    monkeypatch.setenv(sealing.KEY_ENV, "ci-secret")
    _refused(run, made["prereg"], capsys, "seal.sig", "not signed", extra=("--require-signature",))


def test_a_verdict_waits_for_no_one_a_locked_run_is_refused(run, made, capsys):
    with RunLock(run, "grid"):
        _refused(run, made["prereg"], capsys, "locked by another process", "grid")
    with RunLock(run, "verdict"):
        _refused(run, made["prereg"], capsys, "locked by another process", "verdict")
    assert _verdict(run, made["prereg"]) in (0, 1)


def test_outputs_are_replaced_together_or_not_at_all(run, made, capsys, monkeypatch):
    assert _verdict(run, made["prereg"]) in (0, 1)
    old = {n: (run / n).read_bytes() for n in ("verdict.json", "junit.xml")}
    real = os.replace

    def immutable_junit(src, dst, *a, **k):  # an old junit.xml that cannot be moved (chattr +i)
        if Path(src) == run / "junit.xml":
            raise PermissionError(1, "Operation not permitted", str(src))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", immutable_junit)
    assert _verdict(run, made["prereg"], "--rng-seed", "5", "--accept-not-preregistered") == 2
    assert "nothing was replaced" in capsys.readouterr().err
    assert {n: (run / n).read_bytes() for n in old} == old
    assert not list(run.glob(".*.tmp"))


def test_a_planted_lock_symlink_clobbers_nothing(run, made, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (run / ".lock").symlink_to(victim)
    _refused(run, made["prereg"], capsys, ".lock", "cannot be used as the lock")
    assert victim.read_text() == "keep me"
    (run / ".lock").unlink()
    os.mkfifo(run / ".lock")
    _refused(run, made["prereg"], capsys, ".lock", "not a regular file")


def test_a_prereg_that_is_a_fifo_or_a_folder_is_refused_without_hanging(run, made, tmp_path, capsys):
    fifo = tmp_path / "prereg.fifo"
    os.mkfifo(fifo)
    for bad in (fifo, tmp_path):
        assert _verdict(run, bad) == 2
        err = capsys.readouterr().err
        assert "not a regular file" in err and "Traceback" not in err


def test_a_temporary_file_left_by_a_killed_write_is_removed(run, made):
    (run / ".verdict.json.abc123.tmp").write_text("half")
    seed_tmp = run / "seeds" / "seed-0" / ".docs.parquet.xyz.tmp"
    seed_tmp.write_text("half")
    assert _verdict(run, made["prereg"]) in (0, 1)  # hidden files are never sealed, never read
    assert not (run / ".verdict.json.abc123.tmp").exists()  # the verdict's lock removes its own orphans
    out = run.parent
    assert grid.main([*GRID, "--seeds", "2", "--out", str(out), "--prereg", str(made["prereg"])]) == 0
    assert not seed_tmp.exists()  # ... and the grid's lock removes it on resume
    assert _verdict(run, made["prereg"]) in (0, 1)
