"""What N users cost per seed, and what the Ray executor buys on this machine.

    python benchmarks/bench_scaling.py [--users 3,6,12,24] [--preset tiny] [--steps 30]
                                       [--heldout-docs 12] [--ray-users 12] [--ray-seeds 2]
                                       [--ray-workers 2] [--no-ray]

1. The grid (`runners.execution.execute.run_grid`, the local executor) on N synthetic users
   (`fixtures.synthetic`, default sizes but `--heldout-docs` held-out documents per user), one
   seed, into a fresh temporary `--out`, base model cached beforehand (pretraining is not timed):
   per N the adapters trained (2N + 1: users, pooled, loo:<user>), the adapter-text pairs scored
   ((2N + 2) x N with base), the training, evaluation and whole-grid seconds and the ratio to the
   smallest N, and the grid's CPU seconds (this process, all threads: less sensitive than wall
   time to other load on the machine). Training grows as 2N + 1 (one batched loop: rows per step), evaluation as ~2N^2.
2. The same grid with `--ray-users` users and `--ray-seeds` seeds on the local executor and on a
   local Ray instance of `--ray-workers` one-CPU workers, measured in the same process back to
   back (the Ray instance's start-up and shutdown timed apart), and their ratio: the speed-up.
   Also the seconds inside the units (training, evaluation chunks; summed over tasks for Ray),
   which show where the time goes.
The CPU load average is printed before and after: compare figures only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixtures.synthetic import synthetic_fixture_set  # noqa: E402
from runners.base_model import load_or_pretrain  # noqa: E402
from runners.execution.execute import run_grid  # noqa: E402
from runners.grid import build_parser  # noqa: E402
from runners.settings import settings_from_args  # noqa: E402


def grid_settings(n_users: int, seeds: int, preset: str, steps: int, out: Path):
    """The settings `python -m runners.grid` would build for these flags."""
    argv = ["--fixture-set", "synthetic", "--fixtures", str(n_users), "--preset", preset, "--seeds", str(seeds),
            "--steps", str(steps), "--out", str(out), "--prereg", str(ROOT / "prereg.toml")]
    return settings_from_args(build_parser().parse_args(argv))


def timed_grid(fs, s, executor=None) -> dict:
    """One fresh grid run; wall seconds and the seconds the manifest records inside the units."""
    t0, c0 = time.perf_counter(), time.process_time()
    run_dir = run_grid(fs, s, executor=executor)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = json.loads((run_dir / "manifest.json").read_text())["timings"]
    return {"wall_s": wall, "cpu_s": cpu, "prepare_s": t["base_eval_s"],
            "train_s": sum(x["train_s"] for x in t["seeds"]), "eval_s": sum(x["eval_s"] for x in t["seeds"]),
            "run_dir": run_dir}


def scaling(users: list[int], preset: str, steps: int, heldout_docs: int, tmp: Path) -> None:
    print(f"grid time per seed, local executor, preset {preset}, --steps {steps}, synthetic users with "
          f"{heldout_docs} held-out documents each, base model cached:")
    print(f"{'N':>4} {'adapters':>8} {'pairs':>6} {'train s':>8} {'eval s':>8} {'prepare s':>9} {'grid s':>8} "
          f"{'x N=' + str(users[0]):>8} {'ms/pair':>8} {'grid CPU s':>10} {'x N=' + str(users[0]):>8}")
    first = first_cpu = None
    for n in users:
        fs = synthetic_fixture_set(n, heldout_docs=heldout_docs)
        s = grid_settings(n, 1, preset, steps, tmp / f"scale-{n}")
        r = timed_grid(fs, s)
        first, first_cpu = first or r["wall_s"], first_cpu or r["cpu_s"]
        pairs = (2 * n + 2) * n
        print(f"{n:>4} {2 * n + 1:>8} {pairs:>6} {r['train_s']:>8.1f} {r['eval_s']:>8.1f} {r['prepare_s']:>9.1f} "
              f"{r['wall_s']:>8.1f} {r['wall_s'] / first:>8.1f} {1000 * r['eval_s'] / pairs:>8.1f} {r['cpu_s']:>10.1f} "
              f"{r['cpu_s'] / first_cpu:>8.1f}", flush=True)


def ray_speedup(n: int, seeds: int, workers: int, preset: str, steps: int, heldout_docs: int, tmp: Path) -> None:
    import polars as pl
    import ray

    from runners.execution.executors import RayExecutor

    fs = synthetic_fixture_set(n, heldout_docs=heldout_docs)
    print(f"\nlocal executor vs a local Ray instance of {workers} one-CPU workers: {n} users, {seeds} seeds "
          f"({seeds} training units, {seeds} x {workers} evaluation chunks), preset {preset}, --steps {steps}")
    local = timed_grid(fs, grid_settings(n, seeds, preset, steps, tmp / "local"))
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    start_s = time.perf_counter() - t0
    try:
        on_ray = timed_grid(fs, grid_settings(n, seeds, preset, steps, tmp / "ray"), RayExecutor())
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        stop_s = time.perf_counter() - t0
    same = all(pl.read_parquet(local["run_dir"] / f).equals(pl.read_parquet(on_ray["run_dir"] / f))
               for f in ("cells.parquet", "docs.parquet"))
    for name, r in (("local", local), (f"ray x{workers}", on_ray)):
        print(f"  {name:<8} grid {r['wall_s']:6.1f} s   inside units: train {r['train_s']:6.1f} s, eval "
              f"{r['eval_s']:6.1f} s (summed over tasks); driver's base scoring {r['prepare_s']:.1f} s; "
              f"driver CPU {r['cpu_s']:.1f} s")
    print(f"  Ray start-up {start_s:.1f} s, shutdown {stop_s:.1f} s (not in the grid time)")
    print(f"  speed-up of ray x{workers} over local: {local['wall_s'] / on_ray['wall_s']:.2f}x "
          f"({local['wall_s'] / (on_ray['wall_s'] + start_s + stop_s):.2f}x with start-up and shutdown); "
          f"cells.parquet and docs.parquet identical: {same}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", default="3,6,12,24", help="comma-separated N (default 3,6,12,24)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--heldout-docs", type=int, default=12)
    p.add_argument("--ray-users", type=int, default=12)
    p.add_argument("--ray-seeds", type=int, default=2)
    p.add_argument("--ray-workers", type=int, default=2)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    p.add_argument("--no-scaling", action="store_true", help="skip the N sweep")
    args = p.parse_args(argv)
    users = [int(x) for x in args.users.split(",")]
    s = grid_settings(3, 1, args.preset, args.steps, Path(tempfile.gettempdir()))
    fs = synthetic_fixture_set(3)
    load_or_pretrain(s.model, s.pretrain, fs.pretrain, fs.pretrain_sha256())  # the same corpus for every N
    print(f"machine: {os.cpu_count()} CPUs; load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        if not args.no_scaling:
            scaling(users, args.preset, args.steps, args.heldout_docs, Path(tmp))
        if not args.no_ray:
            ray_speedup(args.ray_users, args.ray_seeds, args.ray_workers, args.preset, args.steps,
                        args.heldout_docs, Path(tmp))
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
