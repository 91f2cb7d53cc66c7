"""Where the grid's independent units run: in this process (`--executor local`) or as Ray tasks (`ray`).

One small interface, so `runners.execution.execute` has one code path:

- `put(obj)`: share a large input (the base model, the prepared windows) once; a handle to it.
- `submit(fn, *args)`: a unit of work; `args` may hold handles from `put` or `submit` (Ray passes a
  finished unit's result on to the units that need it without going through the driver).
- `get(handles)`: the units' results, in order.
- `map(fn, units, *shared)`: `get([submit(fn, u, *shared) for u in units])`.
- `parallelism`: how many units can run at once (the evaluation is split into that many chunks).

A unit is a pure function of its arguments (each carries its explicit seed) that returns tensors
and tables; it never writes the run directory. The driver alone writes, so a run started with one
executor resumes with the other, and the executor is not part of the run's configuration.

`LocalExecutor` runs a unit when its result is asked for, in the driver, exactly as the grid ran
before executors existed. `RayExecutor` runs each unit as a Ray task that declares its CPUs (or one
GPU for `--device cuda`) and is retried on another worker when its worker dies (`max_retries`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("runners.grid")

EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'normadapt-verdict[ray]'"
CONNECT_TIMEOUT_S = 5.0  # a --ray-address that does not answer within this is refused
MAX_RETRIES = 3  # re-runs of a unit whose worker died (a unit's own exception is not retried)


class ExecutorError(ValueError):
    """The executor cannot start (ray missing, address unreachable); the message names the flag."""


# -- local ---------------------------------------------------------------------------------------

@dataclass
class _Deferred:
    """A unit not run yet: runs on the first `result()`, once."""

    fn: Callable
    args: tuple
    _done: bool = False
    _value: Any = field(default=None, repr=False)

    def result(self) -> Any:
        if not self._done:
            args = tuple(a.result() if isinstance(a, _Deferred) else a for a in self.args)
            self._value, self._done = self.fn(*args), True
            self.fn, self.args = None, ()  # inputs released once used
        return self._value


class LocalExecutor:
    """Every unit in this process, when its result is asked for (the order the driver asks in)."""

    name = "local"
    parallelism = 1

    def put(self, obj: Any) -> Any:
        return obj

    def submit(self, fn: Callable, *args: Any) -> _Deferred:
        return _Deferred(fn, args)

    def get(self, handles: Sequence[_Deferred]) -> list:
        return [h.result() for h in handles]

    def map(self, fn: Callable, units: Sequence, *shared: Any) -> list:
        return self.get([self.submit(fn, u, *shared) for u in units])

    def close(self) -> None:
        pass


# -- ray -----------------------------------------------------------------------------------------

def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


# HTTP/2 client connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the
# Ray Client server) answers with its own SETTINGS frame (frame type 0x4 in byte 3).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A `host:port` (or `ray://host:port`) address must answer as a gRPC server within `timeout_s`:
    `ray.init` itself waits minutes on a port that accepts but does not answer. `auto` (a cluster
    started on this machine with `ray start --head`) is left to Ray."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExecutorError(f"`--ray-address {address}`: write HOST:PORT (the head node's GCS port, e.g. "
                            "10.0.0.5:6379), ray://HOST:PORT (Ray Client) or auto")
    hint = ("start one with `ray start --head` on that machine, fix the address, or leave `--ray-address` out "
            "to start a local Ray instance")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
            sock.sendall(_H2_PREFACE)
            answer = sock.recv(9)
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ExecutorError(f"`--ray-address {address}`: no Ray cluster answers there within {timeout_s:.0f} s "
                            f"({why}); {hint}") from None
    if len(answer) < 4 or answer[3] != 4:
        raise ExecutorError(f"`--ray-address {address}`: something listens there, but not a Ray cluster (no "
                            f"gRPC answer); {hint}")


def _run_unit(threads: int | None, fn: Callable, *args: Any) -> Any:
    """Body of every Ray task: the declared CPUs as torch threads, then the unit."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(*args)


class RayExecutor:
    """Every unit as a Ray task; on a cluster at `address`, else on a local instance started here.

    `num_cpus`: CPUs of the local instance (default: all of this machine's); `cpus_per_task`: what
    each CPU task declares (and uses as torch threads); `gpu`: each task declares one GPU instead.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpus_per_task: int = 1,
                 gpu: bool = False, max_retries: int = MAX_RETRIES):
        if not ray_available():
            raise ExecutorError(f"`--executor ray`: Ray is not installed; install the extra with `{RAY_INSTALL}` "
                                "(or run with `--executor local`)")
        import ray

        if address is not None:
            check_reachable(address)
        self._ray, self._started = ray, not ray.is_initialized()
        if self._started:
            kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
            try:
                if address is None:
                    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
                else:
                    ray.init(address=address, **kwargs)
            except Exception as exc:  # ray.init raises bare Exception too (a node that timed out starting)
                if address:
                    raise ExecutorError(f"`--ray-address {address}`: Ray could not connect ({exc}); check that "
                                        "the cluster runs (`ray status` on its head node) and the address; a "
                                        "cluster with token authentication (as `ray start` sets up in Ray "
                                        "2.60) also needs `RAY_AUTH_MODE=token` and its token here "
                                        "(docs/ray.md)") from None
                raise ExecutorError(f"`--executor ray`: the local Ray instance did not start ({exc}); retry when "
                                    "the machine is less loaded, or use `--executor local`") from None
        self.gpu, self.cpus_per_task, self.max_retries = gpu, cpus_per_task, max_retries
        self._remote = ray.remote(_run_unit)
        if gpu:
            slots = ray.cluster_resources().get("GPU", 0)
        else:
            slots = ray.cluster_resources().get("CPU", 1) // cpus_per_task
        self.parallelism = max(1, int(slots))
        log.info("ray executor: %s, %d task slot(s) of %s", "local instance" if address is None else address,
                 self.parallelism, "1 GPU" if gpu else f"{cpus_per_task} CPU")

    def put(self, obj: Any) -> Any:
        return self._ray.put(obj)

    def submit(self, fn: Callable, *args: Any) -> Any:
        resources = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": self.cpus_per_task}
        task = self._remote.options(max_retries=self.max_retries, retry_exceptions=False, **resources)
        return task.remote(None if self.gpu else self.cpus_per_task, fn, *args)

    def get(self, handles: Sequence[Any]) -> list:
        return self._ray.get(list(handles))

    def map(self, fn: Callable, units: Sequence, *shared: Any) -> list:
        return self.get([self.submit(fn, u, *shared) for u in units])

    def close(self) -> None:
        """Stops the Ray instance this executor started (a cluster it joined keeps running)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(name: str, address: str | None = None, *, device: str = "cpu",
                  num_cpus: int | None = None) -> LocalExecutor | RayExecutor:
    """The executor `--executor NAME` asks for; ExecutorError naming the flag on bad input."""
    if name == "local":
        if address is not None:
            raise ExecutorError(f"`--ray-address {address}` applies to `--executor ray` only; add it or drop "
                                "`--ray-address`")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus=num_cpus, gpu=device == "cuda")
    raise ExecutorError(f"`--executor {name}`: unknown executor; use one of {', '.join(EXECUTORS)}")


def chunks(n: int, parts: int) -> list[tuple[int, ...]]:
    """0..n-1 in at most `parts` contiguous, non-empty chunks of near-equal size."""
    parts = max(1, min(n, parts))
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(tuple(range(start, stop)))
        start = stop
    return out
