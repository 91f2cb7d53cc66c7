"""Validate the validator: coverage, boundary error rates and power of the verdict, by simulation.

`python -m validation.calibrate [--out DIR] [--from-run DIR] [--seeds 3,5,8,12] [--experiments N]
[--resamples B] [--rng-seed S] [--jobs 2]`

For each design (number of seeds; users and documents from `--from-run` or 3 users x 50 docs),
experiments are simulated by `validation.simulate` at a ladder of true margins shared by every
user: 0, delta, the LENIENT bar, the STRICT bar and one step above it (0, 0.02, 0.05, 0.10,
0.15 with the default pre-registration). Each goes through `validation.judge` (the verdict's own
code). For every interval method of `validation.prereg.INTERVAL_METHODS` the same bootstrap draws
give the users' margin intervals and the criteria (`validation.criteria`), so methods are
compared on identical data. Reported per design:

- margin coverage: the share of (experiment, user) intervals containing the true margin;
- diagonal-effect coverage: the share of the mixed model's Wald intervals containing the true
  `diag` coefficient, on a subsample of experiments (`--model-fits`, the fit is the slow part);
- per criterion, PASS / FAIL / INCONCLUSIVE rates at the ladder rung just below its threshold,
  at it, and just above it; for CATASTROPHIC (TRIGGERED is its "pass"): at 0, delta and above;
- for STRICT and LENIENT also at their least-favourable boundary configuration (`least_favourable`:
  one user at the bar and the others far above for STRICT; for LENIENT all but `required - 1`
  users at the bar), where a criterion over several users is most likely to PASS by chance.

`calibration.json` is written atomically; `CalibrationResult.from_json` reads it back.

Modules, by job: this one is the command line and the plain-text table (and re-exports the
public names); `validation.calibration_plan` what is simulated (ladder, least-favourable
scenarios), `validation.calibration_run` running and summarizing experiments,
`validation.calibration_results` the typed results and the JSON file,
`validation.calibration_study` the quick calibration of one run's design for the verdict.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from validation.calibration_plan import least_favourable, margin_ladder, thresholds
from validation.calibration_results import (CalibrationResult, DesignCalibration, StatusRate,
                                            read_calibration, write_calibration)
from validation.calibration_run import calibrate, run_experiment, summarize_design
from validation.calibration_study import calibration_for_study
from validation.prereg import Prereg, PreregError, load_prereg
from validation.simulate import SimParams
from validation.simulate_from_run import params_from_run

__all__ = ["CalibrationResult", "DesignCalibration", "StatusRate", "calibrate",
           "calibration_for_study", "format_table", "least_favourable", "main", "margin_ladder",
           "read_calibration", "run_experiment", "summarize_design", "thresholds",
           "write_calibration"]


# ---- the table ------------------------------------------------------------------------------

def format_table(result: CalibrationResult) -> str:
    """A plain-text summary: coverage per design and method, then status rates per criterion."""
    lines = []
    methods = result.designs[0].methods
    head = f"{'seeds':>5} {'users':>5} {'docs':>5} {'N':>6}  " + "  ".join(
        f"{'cov ' + m:>22}" for m in methods) + f"  {'diag cov (fits)':>16}"
    lines += [f"Margin-interval coverage (nominal {result.designs[0].level:.0%})", head]
    for d in result.designs:
        diag = "n/a" if d.diagonal_effect_coverage is None else f"{d.diagonal_effect_coverage:.3f} ({d.n_model_fits})"
        figs = [d.figures(m) for m in methods]
        lines.append(f"{d.seeds:>5} {d.n_users:>5} {int(np.mean(d.n_docs)):>5} {d.n_experiments:>6}  "
                     + "  ".join(f"{f.coverage:>8.3f} (w {f.mean_width:.3f})".rjust(22) for f in figs)
                     + f"  {diag:>16}")
    for m in methods:
        lines += ["", f"Criterion status rates, intervals: {m}  (pass = PASS, or TRIGGERED for catastrophic)",
                  f"{'seeds':>5} {'criterion':>12} {'relation':>21} {'margin':>7} {'pass':>7} {'fail':>7} {'inconcl':>7}"]
        for d in result.designs:
            for r in d.rates(m):
                lines.append(f"{d.seeds:>5} {r.criterion:>12} {r.relation:>21} {r.true_margin:>7.3f} "
                             f"{r.pass_rate:>7.3f} {r.fail_rate:>7.3f} {r.inconclusive_rate:>7.3f}")
    return "\n".join(lines)


# ---- CLI ------------------------------------------------------------------------------------

def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--seeds` must be comma-separated integers, e.g. 3,5,8,12; got {text!r}") from None
    if not seeds or min(seeds) < 2:
        raise argparse.ArgumentTypeError(f"`--seeds` needs integers >= 2; got {text!r}")
    return seeds


def _positive(name: str, lo: int = 1):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo:
            raise argparse.ArgumentTypeError(f"`{name}` must be an integer >= {lo}; got {text!r}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validation.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="calibration", help="directory for calibration.json (default ./calibration)")
    p.add_argument("--from-run", metavar="DIR", help="estimate the simulation's parameters and design from a run")
    p.add_argument("--seeds", type=_parse_seeds, default=(3, 5, 8, 12), help="designs: numbers of seeds (default 3,5,8,12)")
    p.add_argument("--experiments", type=_positive("--experiments"), default=1400,
                   help="simulated experiments per design, split over the 7 scenarios (default 1400)")
    p.add_argument("--resamples", type=_positive("--resamples", 10), default=1000,
                   help="bootstrap resamples per experiment (default 1000)")
    p.add_argument("--model-fits", type=_positive("--model-fits", 0), default=100,
                   help="experiments per design that also fit the mixed model (default 100)")
    p.add_argument("--users", type=_positive("--users", 2), default=None, help="users (default 3, or the run's)")
    p.add_argument("--docs", type=_positive("--docs"), default=None, help="documents per user (default 50, or the run's)")
    p.add_argument("--prereg", default=None, help="pre-registration file (default prereg.toml if present)")
    p.add_argument("--rng-seed", type=int, default=20260101, help="seed of every simulation (default 20260101)")
    p.add_argument("--jobs", type=_positive("--jobs"), default=min(2, os.cpu_count() or 1),
                   help="worker processes (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prereg_path = args.prereg or ("prereg.toml" if Path("prereg.toml").is_file() else None)
        prereg = load_prereg(prereg_path) if prereg_path else Prereg()
        notes: tuple[str, ...] = ()
        if args.from_run:
            if args.users or args.docs:
                raise ValueError("`--users`/`--docs` cannot be combined with `--from-run` (the run fixes them).")
            params, notes = params_from_run(args.from_run)
        else:
            params = SimParams().with_design(users=args.users, n_docs=args.docs)
    except (ValueError, PreregError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"calibrating {len(args.seeds)} design(s) x {args.experiments} experiments, "
          f"B={args.resamples}, {args.jobs} process(es); parameters: {params.source}", file=sys.stderr)
    result = calibrate(params, prereg, seeds=args.seeds, n_experiments=args.experiments,
                       n_resamples=args.resamples, n_model_fits=args.model_fits,
                       rng_seed=args.rng_seed, jobs=args.jobs, notes=notes)
    path = write_calibration(result, args.out)
    print(format_table(result))
    print(f"\nwrote {path} in {result.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
