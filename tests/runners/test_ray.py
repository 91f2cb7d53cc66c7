"""`--executor ray`: the grid's units as Ray tasks give the local executor's cells exactly, survive a
killed worker, resume a run the other executor started; bad executor flags exit 2 naming the flag.

The chunking and flag tests need no Ray; the rest skip when the ray extra is not installed. One
local Ray instance with two CPUs (two workers) serves the module: starting one takes about 2 s and
stopping it about 1 s on the project's 2-core machine (docs/ray.md)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import polars as pl
import pytest

from runners import grid
from runners.execution import executors
from runners.execution.execute import run_grid
from runners.execution.executors import ExecutorError, LocalExecutor, RayExecutor, check_reachable, chunks
from runners.execution.units import train_unit
from runners.settings import UsageError, settings_from_args
from tests.support.ray_faults import die_once
from tests.support.runs import small_set, tiny_settings


@pytest.fixture(scope="module")
def fs():
    return small_set(3)


def tables(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_parquet(run_dir / "cells.parquet"), pl.read_parquet(run_dir / "docs.parquet")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, fs, session_cache):
    """The reference: the whole grid on the local executor (two seeds, tiny preset)."""
    tmp = tmp_path_factory.mktemp("local")
    return run_grid(fs, tiny_settings(tmp / "runs", tmp / "prereg.toml"))


# -- no Ray needed -------------------------------------------------------------------------------

def test_chunks_are_contiguous_near_equal_and_cover_every_row():
    assert chunks(7, 3) == [(0, 1, 2), (3, 4), (5, 6)]
    assert chunks(7, 1) == [tuple(range(7))]
    assert chunks(2, 5) == [(0,), (1,)]  # never an empty chunk
    assert chunks(5, 5) == [(0,), (1,), (2,), (3,), (4,)]


class ChunkedLocal(LocalExecutor):
    """The local executor with the evaluation split as a Ray executor of `parallelism` slots would."""

    def __init__(self, parallelism: int):
        self.parallelism = parallelism


@pytest.mark.parametrize("parts", [3])
def test_evaluation_in_chunks_of_adapter_rows_gives_one_banks_nlls_bit_for_bit(tmp_path, fs, local_run, parts):
    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml")
    chunked = run_grid(fs, s, executor=ChunkedLocal(parts))  # 7 trained adapters: chunks of 3, 2, 2
    assert chunked.name == local_run.name
    for a, b in zip(tables(chunked), tables(local_run), strict=True):
        assert a.equals(b)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = grid.main(argv)
    return code, capsys.readouterr().err


def base_argv(tmp_path: Path) -> list[str]:
    return ["--fixture-set", "synthetic", "--preset", "tiny", "--seeds", "1", "--steps", "2", "-q",
            "--out", str(tmp_path / "runs")]


def test_unknown_executor_exits_2_naming_the_flag(tmp_path, capsys):
    code, err = run_cli(base_argv(tmp_path) + ["--executor", "dask"], capsys)
    assert code == 2 and "`--executor dask`: unknown executor; use one of local, ray" in err


def test_ray_address_without_the_ray_executor_exits_2(tmp_path, capsys):
    code, err = run_cli(base_argv(tmp_path) + ["--ray-address", "127.0.0.1:6379"], capsys)
    assert code == 2 and "`--ray-address 127.0.0.1:6379`: applies to `--executor ray` only" in err


def test_ray_executor_without_ray_installed_exits_2_with_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "ray_available", lambda: False)
    code, err = run_cli(base_argv(tmp_path) + ["--executor", "ray"], capsys)
    assert code == 2 and "`--executor ray`: Ray is not installed" in err
    assert "pip install 'normadapt-verdict[ray]'" in err
    with pytest.raises(ExecutorError, match="pip install 'normadapt-verdict\\[ray\\]'"):
        RayExecutor()


def test_executor_is_not_part_of_the_run_configuration(tmp_path):
    args = grid.build_parser().parse_args(base_argv(tmp_path))
    s = settings_from_args(args)
    assert s.executor == "local" and s.ray_address is None
    with pytest.raises(UsageError, match="--executor"):
        settings_from_args(grid.build_parser().parse_args(base_argv(tmp_path) + ["--executor", "spark"]))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_unreachable_silent_or_malformed_address_is_refused_naming_it():
    port = closed_port()
    with pytest.raises(ExecutorError, match=f"`--ray-address 127.0.0.1:{port}`: no Ray cluster answers"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=1)
    with socket.socket() as silent:  # accepts connections, never answers: ray.init would wait minutes
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ExecutorError, match=f"`--ray-address {address}`: no Ray cluster answers there within "
                                                "1 s \\(no answer\\)"):
            check_reachable(address, timeout_s=1)
    with pytest.raises(ExecutorError, match="`--ray-address headnode`: write HOST:PORT"):
        check_reachable("headnode")


# -- on a local Ray instance ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_two_workers():
    """A local Ray instance with 2 CPUs: two workers run one-CPU tasks side by side."""
    ray = pytest.importorskip("ray")
    kwargs = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        ray.init(**kwargs)
    except Exception:  # Ray waits 30 s for its raylet; on an overloaded machine once more
        ray.shutdown()
        ray.init(**kwargs)
    yield ray
    ray.shutdown()


def test_unreachable_address_exits_2_naming_the_address(tmp_path, capsys):
    pytest.importorskip("ray")
    port = closed_port()
    code, err = run_cli(base_argv(tmp_path) + ["--executor", "ray", "--ray-address", f"127.0.0.1:{port}"], capsys)
    assert code == 2 and f"`--ray-address 127.0.0.1:{port}`: no Ray cluster answers there" in err
    assert not list((tmp_path / "runs").glob("synthetic-*"))  # refused before a run directory exists


def test_a_running_clusters_address_passes_the_check(ray_two_workers, monkeypatch):
    """The check really speaks to the cluster's GCS port (and gets a gRPC answer), and a listener
    on another port that answers something else is refused: a check that let every address through
    would fail here."""
    address = ray_two_workers.get_runtime_context().gcs_address
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), address
    dialled = []
    connect = socket.create_connection

    def recording(target, *args, **kwargs):
        dialled.append(target)
        return connect(target, *args, **kwargs)

    monkeypatch.setattr(executors.socket, "create_connection", recording)
    assert check_reachable(address, timeout_s=5) is None
    assert dialled == [(host, int(port))]
    with socket.socket() as http1:  # answers, but not with an HTTP/2 SETTINGS frame
        http1.bind(("127.0.0.1", 0))
        http1.listen()
        other = f"127.0.0.1:{http1.getsockname()[1]}"
        answered = threading.Thread(target=lambda: http1.accept()[0].sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
        answered.start()
        with pytest.raises(ExecutorError, match=f"`--ray-address {other}`: something listens there, but not a Ray"):
            check_reachable(other, timeout_s=5)
        answered.join(5)


class KillFirstTraining(RayExecutor):
    """A Ray executor whose first training task SIGKILLs its own worker on its first attempt."""

    def __init__(self, marker: Path, **kw):
        super().__init__(**kw)
        self.marker = str(marker)

    def submit(self, fn, *args):
        if fn is train_unit and args[0].seed == 0:
            return super().submit(die_once, self.marker, fn, *args)
        return super().submit(fn, *args)


@pytest.mark.slow
def test_ray_cells_equal_the_local_executors_with_a_worker_killed_mid_task(tmp_path, fs, local_run, ray_two_workers):
    marker = tmp_path / "killed"
    executor = KillFirstTraining(marker)
    assert executor.parallelism == 2
    run_dir = run_grid(fs, tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml"), executor=executor)
    executor.close()  # joined, not started: the module's instance keeps running
    assert ray_two_workers.is_initialized()
    killed, retried = int(marker.read_text()), int(Path(f"{marker}.retry").read_text())
    assert killed != retried  # the retry ran in another worker process
    assert run_dir.name == local_run.name  # same run id: the executor is not in the configuration
    for a, b in zip(tables(run_dir), tables(local_run), strict=True):
        assert a.equals(b)


def test_a_unit_without_retries_fails_when_its_worker_dies(tmp_path, fs, ray_two_workers):
    """The retry above is what saved the run: with max_retries=0 the same kill is an error."""
    executor = KillFirstTraining(tmp_path / "killed", max_retries=0)
    with pytest.raises(ray_two_workers.exceptions.WorkerCrashedError):
        run_grid(fs, tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml"), executor=executor)


@pytest.mark.parametrize("first,second", [("local", "ray"), ("ray", "local")])
def test_a_run_started_with_one_executor_resumes_with_the_other(tmp_path, fs, local_run, ray_two_workers,
                                                                first, second):
    def make(name):
        return LocalExecutor() if name == "local" else RayExecutor()

    def crash(seed):
        raise KeyboardInterrupt

    s = tiny_settings(tmp_path / "runs", tmp_path / "prereg.toml")
    with pytest.raises(KeyboardInterrupt):
        run_grid(fs, s, executor=make(first), on_seed_done=crash)  # seed 0 written, then stopped
    run_dir = s.out / local_run.name
    assert (run_dir / "seeds/seed-0/done.json").exists() and not (run_dir / "seeds/seed-1/done.json").exists()
    resumed = run_grid(fs, s, executor=make(second))
    assert resumed == run_dir
    assert json.loads((run_dir / "manifest.json").read_text())["timings"]["resumed_seeds"] == [0]
    for a, b in zip(tables(resumed), tables(local_run), strict=True):
        assert a.equals(b)
