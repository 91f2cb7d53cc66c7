"""Validate the validator: coverage, boundary error rates and power of the verdict, by simulation.

`python -m validation.calibrate [--out DIR] [--from-run DIR] [--seeds 3,5,8,12] [--experiments N]
[--resamples B] [--rng-seed S] [--jobs 2]`

`--study steps` calibrates instead the training-step interaction and the cluster support
(`validation.calibration.steps`; writes `calibration_steps.json`); `--study population` the
population criteria (`validation.calibration.population`; writes `calibration_population.json`);
`--study step-trends` the step interaction with seed-shared count trends
(`validation.calibration.steps.calibrate_step_trends`; `calibration_step_trends.json`);
`--study population-share` the population share at 17 to 3,000 users by the cheap per-user path
(`validation.calibration.population.calibrate_share_users`; `calibration_population_share.json`);
`--study routing` ROUTING, AVERAGING and NOISE at their least-favourable boundaries and their power
(`validation.calibration.routing`; `calibration_routing.json`).

For each design (number of seeds; users and documents from `--from-run` or 3 users x 50 docs),
experiments are simulated by `validation.simulation.simulate` at a ladder of true margins shared by every
user: 0, delta, the LENIENT bar, the STRICT bar and one step above it (0, 0.02, 0.05, 0.10,
0.15 with the default pre-registration). Each goes through `validation.judge` (the verdict's own
code). For every interval method of `validation.contract.prereg.INTERVAL_METHODS` the same bootstrap draws
give the users' margin intervals and the criteria (`validation.judgment.criteria`), so methods are
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
public names); `validation.calibration.plan` what is simulated (ladder, least-favourable
scenarios), `validation.calibration.run` running and summarizing experiments,
`validation.calibration.results` the typed results and the JSON file,
`validation.calibration.study` the quick calibration of one run's design for the verdict.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.contract import DEFAULT_RNG_SEED
from validation.calibration.plan import REGIMES, least_favourable, margin_ladder, regime_params, thresholds
from validation.calibration.results import (
    LEAST_FAVOURABLE,
    CalibrationResult,
    DesignCalibration,
    StatusRate,
    read_calibration,
    write_calibration,
)
from validation.calibration.run import calibrate, run_experiment, summarize_design
from validation.calibration.study import calibration_for_study
from validation.contract.prereg import Prereg, PreregError, load_prereg
from validation.simulation.from_run import params_from_run

DEFAULT_EXPERIMENTS = 420      # per design: 60 per scenario; coverage to about +-0.01
DEFAULT_DOCS = (20, 50, 200)

__all__ = ["CalibrationResult", "DesignCalibration", "StatusRate", "calibrate",
           "calibration_for_study", "format_table", "least_favourable", "main", "margin_ladder",
           "read_calibration", "run_experiment", "summarize_design", "thresholds",
           "write_calibration"]


# ---- the table ------------------------------------------------------------------------------

def _design_head(d: DesignCalibration) -> str:
    share = "n/a" if d.seed_share is None else f"{d.seed_share:.2f}"
    return f"{d.regime or '-':>18} {share:>5} {d.seeds:>5} {d.n_users:>5} {d.docs:>5} {d.n_experiments:>6}"


_HEAD = f"{'regime':>18} {'share':>5} {'seeds':>5} {'users':>5} {'docs':>5} {'N':>6}"


def _rate(d: DesignCalibration, criterion: str, relation: str) -> str:
    r = [x for x in d.rates() if x.criterion == criterion and x.relation == relation]
    return f"{r[0].pass_rate:.3f}" if r else "n/a"


def format_table(result: CalibrationResult) -> str:
    """A plain-text summary: coverage per design and method; false-PASS rates at the
    least-favourable boundaries beside power (pre-registered method); status rates."""
    d0 = result.designs[0]
    methods = d0.methods
    lines = [f"Margin-interval coverage (nominal {d0.level:.0%}); share = estimated seed share of "
             "the margins' variance", _HEAD + "  " + "  ".join(f"{'cov ' + m:>26}" for m in methods)
             + f"  {'diag cov (fits)':>16}"]
    for d in result.designs:
        diag = "n/a" if d.diagonal_effect_coverage is None else f"{d.diagonal_effect_coverage:.3f} ({d.n_model_fits})"
        lines.append(_design_head(d) + "  " + "  ".join(
            f"{f.coverage:>8.3f} (w {f.mean_width:.3f})".rjust(26) for f in (d.figures(m) for m in methods))
            + f"  {diag:>16}")
    lf = LEAST_FAVOURABLE
    above = {r.criterion: f"{r.true_margin:.0%}" for r in d0.rates() if r.relation == "above"}
    lines += ["", f"False PASS at the least-favourable boundary | power ({d0.method} intervals)",
              _HEAD + f"  {'STRICT LF':>9} {'LENIENT LF':>10} {'CATA@delta':>10} | "
              f"{'STRICT@' + above.get('strict', '?'):>11} {'LENIENT@' + above.get('lenient', '?'):>12} {'CATA@0':>7}"]
    for d in result.designs:
        lines.append(_design_head(d) + f"  {_rate(d, 'strict', lf):>9} {_rate(d, 'lenient', lf):>10} "
                     f"{_rate(d, 'catastrophic', 'at'):>10} | {_rate(d, 'strict', 'above'):>11} "
                     f"{_rate(d, 'lenient', 'above'):>12} {_rate(d, 'catastrophic', 'below'):>7}")
    lines += ["", f"Criterion status rates, intervals: {d0.method}  (pass = PASS, or TRIGGERED for "
              "catastrophic; every method's are in calibration.json)",
              _HEAD + f" {'criterion':>12} {'relation':>21} {'margin':>7} {'pass':>7} {'fail':>7} {'inconcl':>7}"]
    for d in result.designs:
        for r in d.rates():
            lines.append(_design_head(d) + f" {r.criterion:>12} {r.relation:>21} {r.true_margin:>7.3f} "
                         f"{r.pass_rate:>7.3f} {r.fail_rate:>7.3f} {r.inconclusive_rate:>7.3f}")
    return "\n".join(lines + ["", *summary_lines(result)])


COVERAGE_BAND = (0.93, 0.97)   # the coverage a 95% method must reach in every regime x design
FALSE_PASS_LIMIT = 0.05        # the least-favourable false-PASS rate each criterion must stay under


def summary_lines(result: CalibrationResult) -> list[str]:
    """The verdict on the calibration itself, for the method the designs were judged with: its
    coverage range and how many designs fall inside COVERAGE_BAND; per regime, each criterion's
    least-favourable false-PASS rate pooled over the regime's designs (count / experiments) against
    FALSE_PASS_LIMIT, with the largest single design's rate (about 60 experiments each at the
    default 420 per design, so single designs scatter by about +-2 points around 2.5%)."""
    d0 = result.designs[0]
    lo, hi = COVERAGE_BAND
    cov = [d.margin_coverage for d in result.designs]
    inside = sum(lo <= c <= hi for c in cov)
    lines = [f"Summary ({d0.method} intervals, nominal {d0.level:.0%}): coverage {min(cov):.3f}-{max(cov):.3f}; "
             f"{inside} of {len(cov)} designs inside {lo:.2f}-{hi:.2f}"
             + ("" if inside == len(cov) else " (OUTSIDE: " + ", ".join(
                 f"{d.regime or '-'} {d.seeds} seeds x {d.docs} docs {d.margin_coverage:.3f}"
                 for d in result.designs if not lo <= d.margin_coverage <= hi) + ")")]
    for regime in dict.fromkeys(d.regime for d in result.designs):
        designs = [d for d in result.designs if d.regime == regime]
        parts = []
        for criterion, relation in (("strict", LEAST_FAVOURABLE), ("lenient", LEAST_FAVOURABLE),
                                    ("catastrophic", "at")):
            rates = [r for d in designs for r in d.rates() if r.criterion == criterion and r.relation == relation]
            if not rates:
                continue
            k, n = sum(round(r.pass_rate * r.n) for r in rates), sum(r.n for r in rates)
            flag = "" if k / n <= FALSE_PASS_LIMIT else " ABOVE the limit"
            label = "CATASTROPHIC TRIGGERED at delta" if criterion == "catastrophic" else criterion.upper()
            parts.append(f"{label} {k}/{n} = {k / n:.3f}{flag} (largest design "
                         f"{max(r.pass_rate for r in rates):.3f})")
        lines.append(f"  least-favourable error, {regime or 'all designs'} (false PASS; false TRIGGERED for "
                     f"CATASTROPHIC; pooled over {len(designs)} designs, limit {FALSE_PASS_LIMIT:.0%}): "
                     + "; ".join(parts))
    return lines


# ---- CLI ------------------------------------------------------------------------------------

def _int_list(flag: str, lo: int, example: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"`{flag}` must be comma-separated integers, e.g. {example}; got {text!r}") from None
        if not values or min(values) < lo:
            raise argparse.ArgumentTypeError(f"`{flag}` needs integers >= {lo}; got {text!r}")
        return values
    return parse


_parse_seeds = _int_list("--seeds", 2, "3,5,8,12")


def _parse_regimes(text: str) -> tuple[str, ...]:
    names = tuple(REGIMES) if text == "all" else tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in REGIMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"`--regime` must be `all` or comma-separated names from "
                                         f"{', '.join(REGIMES)}; got {text!r}")
    return names


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
    p.add_argument("--seeds", type=_parse_seeds, default=None,
                   help="designs: numbers of seeds (default 3,5,8,12; 3 for --study population)")
    p.add_argument("--regime", type=_parse_regimes, default=None,
                   help="noise regimes to simulate: `all` (default) or a comma-separated list of "
                        + ", ".join(REGIMES) + " (validation/calibration/plan.py)")
    p.add_argument("--experiments", type=_positive("--experiments"), default=DEFAULT_EXPERIMENTS,
                   help="simulated experiments per design (regime x seeds x documents), split over "
                        f"the 7 scenarios (default {DEFAULT_EXPERIMENTS})")
    p.add_argument("--resamples", type=_positive("--resamples", 10), default=1000,
                   help="bootstrap resamples per experiment (default 1000)")
    p.add_argument("--model-fits", type=_positive("--model-fits", 0), default=0,
                   help="experiments per design that also fit the mixed model, ~0.6 s each (default 0)")
    p.add_argument("--users", type=_positive("--users", 2), default=None, help="users (default 3, or the run's)")
    p.add_argument("--docs", type=_int_list("--docs", 1, "20,50,200"), default=None,
                   help="held-out documents per user, comma-separated (default 20,50,200, or the run's)")
    p.add_argument("--prereg", default=None, help="pre-registration file (default prereg.toml if present)")
    p.add_argument("--rng-seed", type=int, default=DEFAULT_RNG_SEED,
                   help=f"seed of every simulation (default {DEFAULT_RNG_SEED})")
    p.add_argument("--jobs", type=_positive("--jobs"), default=min(2, os.cpu_count() or 1),
                   help="worker processes (default 2)")
    p.add_argument("--study", choices=("margins", "steps", "population", "step-trends", "population-share",
                                       "figures", "routing"),
                   default="margins",
                   help="`margins` (default): the verdict's margin intervals and criteria; `steps`: the "
                        "training-step interaction and the cluster support (validation/calibration/steps.py, "
                        "one process); `population`: the population criteria "
                        "(validation/calibration/population.py, one process; honours --out, --experiments, "
                        "--resamples, --prereg, --rng-seed and the first of --seeds and --docs); "
                        "`step-trends`: the step interaction with seed-shared count trends (3 seeds and "
                        "200 sweeps per row by default; "
                        "honours --seeds, --regime, --experiments, --resamples, --model-fits); "
                        "`population-share`: the population share at 17 to 3,000 users, cheap per-user path "
                        "(honours --out, --experiments, --prereg, --rng-seed and the first of --seeds); `figures`: "
                        "2-seed and diverged-seed margins, the decomposition, the Mantel p "
                        "(validation/calibration/figures.py, one process); `routing`: ROUTING, AVERAGING and "
                        "NOISE at their least-favourable boundaries and their power (validation/calibration/"
                        "routing.py, one process; honours --seeds (default 3,5), --regime, --docs (first), "
                        "--experiments, --resamples)")
    return p


def _main_steps(args, prereg: Prereg) -> int:
    """`--study steps`: false-positive rate and power of the step interaction and cluster support."""
    from validation.calibration.steps import calibrate_steps, format_steps_table, write_steps_calibration
    if args.from_run or args.users or args.docs:
        print("error: `--study steps` simulates its own design (3 users x 50 documents, 6 users for the "
              "clusters); drop `--from-run`, `--users` and `--docs`.", file=sys.stderr)
        return 2
    regimes = args.regime or ("seed-dominated", "document-dominated")
    print(f"calibrating the step interaction and cluster support: {len(regimes) * len(args.seeds)} design(s) "
          f"x {args.experiments} experiments per scenario, B={args.resamples}", file=sys.stderr)
    def progress(done: int, total: int) -> None:
        if done % 20 == 0 or done == total:
            print(f"  {done}/{total} experiments", file=sys.stderr, flush=True)
    res = calibrate_steps(prereg, seeds=args.seeds, regimes=regimes, n_experiments=args.experiments,
                          n_resamples=args.resamples, model_fits=args.model_fits, rng_seed=args.rng_seed,
                          progress=progress)
    path = write_steps_calibration(res, args.out)
    print(format_steps_table(res))
    print(f"\nwrote {path} in {res.wall_s:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prereg_path = args.prereg or ("prereg.toml" if Path("prereg.toml").is_file() else None)
        prereg = load_prereg(prereg_path) if prereg_path else Prereg()
        if args.study in ("step-trends", "population-share"):
            return _main_issue23(args, prereg)
        if args.study == "population":
            if args.from_run or args.users or args.regime:
                raise ValueError("`--study population` simulates its own designs (20 and 40 users for the "
                                 "share, 6, 12 and 24 for the effect); drop `--from-run`, `--users` and "
                                 "`--regime`.")
            return _population(args, prereg)
        if args.study == "figures":
            return _main_figures(args, prereg)
        if args.study == "routing":
            return _main_routing(args, prereg)
        args.seeds = args.seeds or (3, 5, 8, 12)
        if args.study == "steps":
            return _main_steps(args, prereg)
        notes: tuple[str, ...] = ()
        if args.from_run:
            if args.users or args.docs or args.regime:
                raise ValueError("`--users`/`--docs`/`--regime` cannot be combined with `--from-run` "
                                 "(the run fixes its design and its parameters).")
            params, notes = params_from_run(args.from_run)
            every = [params]
        else:
            every = [regime_params(r, users=args.users, n_docs=d)
                     for r in (args.regime or tuple(REGIMES)) for d in (args.docs or DEFAULT_DOCS)]
    except (ValueError, PreregError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"calibrating {len(every) * len(args.seeds)} design(s) x {args.experiments} experiments, "
          f"B={args.resamples}, {args.jobs} process(es); parameters: "
          + ", ".join(sorted({p.source for p in every})), file=sys.stderr)
    result = calibrate(every[0], prereg, seeds=args.seeds, n_experiments=args.experiments,
                       n_resamples=args.resamples, n_model_fits=args.model_fits,
                       rng_seed=args.rng_seed, jobs=args.jobs, notes=notes, variants=tuple(every[1:]))
    path = write_calibration(result, args.out)
    print(format_table(result))
    print(f"\nwrote {path} in {result.wall_s:.0f} s")
    return 0


def _main_issue23(args, prereg: Prereg) -> int:
    """`--study step-trends` and `--study population-share` (issue 23): their own designs."""
    if args.from_run or args.users or args.docs or (args.regime and args.study == "population-share"):
        raise ValueError(f"`--study {args.study}` simulates its own designs; drop `--from-run`, `--users`, "
                         "`--docs`" + (" and `--regime`." if args.study == "population-share" else "."))
    default = args.experiments == DEFAULT_EXPERIMENTS
    if args.study == "population-share":
        from validation.calibration.population import (
            calibrate_share_users,
            format_share_users_table,
            write_share_users_calibration,
        )
        res = calibrate_share_users(prereg, n_experiments=2000 if default else args.experiments,
                                    n_seeds=(args.seeds or (3,))[0], rng_seed=args.rng_seed)
        path = write_share_users_calibration(res, args.out)
        print(format_share_users_table(res))
    else:
        from validation.calibration.steps import calibrate_step_trends, format_trend_table, write_trend_calibration

        def progress(done: int, total: int) -> None:
            if done % 20 == 0 or done == total:
                print(f"  {done}/{total} sweeps", file=sys.stderr, flush=True)
        res = calibrate_step_trends(prereg, seeds=args.seeds or (3,),
                                    regimes=args.regime or ("seed-dominated", "document-dominated"),
                                    n_experiments=200 if default else args.experiments,
                                    n_resamples=args.resamples, model_fits=args.model_fits,
                                    rng_seed=args.rng_seed, progress=progress)
        path = write_trend_calibration(res, args.out)
        print(format_trend_table(res))
    print(f"\nwrote {path} in {res.wall_s:.0f} s")
    return 0


def _population(args, prereg: Prereg) -> int:
    from validation.calibration.population import (
        calibrate_population,
        format_population_table,
        write_population_calibration,
    )
    n_seeds = (args.seeds or (3,))[0]
    experiments = 200 if args.experiments == DEFAULT_EXPERIMENTS else args.experiments
    print(f"calibrating the population criteria: {experiments} experiments per scenario and number of "
          f"users, {n_seeds} seeds, B={args.resamples}", file=sys.stderr)
    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} experiments", file=sys.stderr, flush=True)

    result = calibrate_population(prereg, n_experiments=experiments, n_seeds=n_seeds,
                                  n_docs=(args.docs or (20,))[0], n_resamples=args.resamples,
                                  rng_seed=args.rng_seed, progress=progress)
    path = write_population_calibration(result, args.out)
    print(format_population_table(result))
    print(f"\nwrote {path} in {result.wall_s:.0f} s")
    return 0


def _main_figures(args, prereg: Prereg) -> int:
    """`--study figures` (issue 23): every figure beyond the margin ladder, one row each
    (`validation.calibration.figures`)."""
    from validation.calibration.figures import calibrate_figures, format_figures_table, write_figures_calibration
    if args.from_run or args.users:
        raise ValueError("`--study figures` simulates its own designs (3 users; 6 for the Mantel test); drop "
                         "`--from-run` and `--users`.")
    regimes = args.regime or ("seed-dominated", "document-dominated")
    experiments = 200 if args.experiments == DEFAULT_EXPERIMENTS else args.experiments
    print(f"calibrating the figures: {len(regimes)} regime(s) x {experiments} experiments per row, "
          f"B={args.resamples}", file=sys.stderr)
    res = calibrate_figures(prereg, n_seeds=(args.seeds or (3,))[0], n_docs=(args.docs or (50,))[0],
                            regimes=regimes, n_experiments=experiments, n_resamples=args.resamples,
                            rng_seed=args.rng_seed,
                            progress=lambda r: print(f"  {r} done", file=sys.stderr, flush=True))
    path = write_figures_calibration(res, args.out)
    print(format_figures_table(res))
    print(f"\nwrote {path} in {res.wall_s:.0f} s")
    return 0


def _main_routing(args, prereg: Prereg) -> int:
    """`--study routing` (issue 25): the routing criteria's false PASS and power
    (`validation.calibration.routing`)."""
    from validation.calibration.figures import format_figures_table
    from validation.calibration.routing import calibrate_routing, pooled_lines, write_routing_calibration
    if args.from_run or args.users:
        raise ValueError("`--study routing` simulates its own designs (3 users); drop `--from-run` and `--users`.")
    regimes = args.regime or tuple(REGIMES)
    seeds = args.seeds or (3, 5)
    experiments = 200 if args.experiments == DEFAULT_EXPERIMENTS else args.experiments
    print(f"calibrating the routing criteria: {len(regimes) * len(seeds)} design(s) x 2 scenarios x "
          f"{experiments} experiments, B={args.resamples}", file=sys.stderr)
    res = calibrate_routing(prereg, seeds=seeds, n_docs=(args.docs or (50,))[0], regimes=regimes,
                            n_experiments=experiments, n_resamples=args.resamples, rng_seed=args.rng_seed,
                            progress=lambda r: print(f"  {r} done", file=sys.stderr, flush=True))
    path = write_routing_calibration(res, args.out)
    print(format_figures_table(res, "Routing criteria at their least-favourable boundaries, and power"))
    print("\n".join(["", *pooled_lines(res)]))
    print(f"\nwrote {path} in {res.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
