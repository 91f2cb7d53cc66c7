"""`python -m validation.verdict`: judge a run (or external cells) against prereg.toml.

Exit codes: 0 the gate passed, 1 the gate failed, 2 bad input or a tool error (the message names
the file, the row, the column or the setting). Everything is computed before anything is written,
and every write is atomic, so bad input never leaves a partial output behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from common.atomic import replace_together
from common.limits import gib, memory_budget
from common.lock import RunLock, RunLocked
from validation.contract.prereg import PreregError, check_users, default_prereg_path, load_prereg
from validation.contract.prereg_check import (
    Settings,
    check_prereg,
    with_overrides,
    with_recorded_settings,
    with_unregistered,
)
from validation.exploratory.similarity import Similarity, similarity_for_verdict
from validation.exploratory.steps import StepsAnalysis, analyze_resampled
from validation.inputs.load import resolve_run
from validation.inputs.sealed import NOT_SEALED, check_facts, open_seal
from validation.inputs.sweep import load_steps
from validation.inputs.tables import InputError
from validation.judgment.criteria import ACCEPT_FLAG, preregistration_gate
from validation.judgment.results import Verdict
from validation.judgment.routing_checks import check_routing
from validation.judgment.steps import judge_exploratory, primary_count, resample_counts, unregistered_count
from validation.judgment.study import judge
from validation.stats.bootstrap import Resampled, bootstrap_bytes
from validation.study_verdict import StudyVerdict
from validation.text.outputs import junit_xml, markdown_summary, term

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validation.verdict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", metavar="DIR", help="run directory (default: runs/latest)")
    src.add_argument("--cells", metavar="FILE", help="external cells, CSV or Parquet")
    p.add_argument("--docs", metavar="FILE", help="external per-document rows (with --cells)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the run directory, or "
                   "<cells file stem>.verdict/ beside the cells file)")
    p.add_argument("--runs-root", metavar="DIR", default="runs", help="where runs/latest lives")
    p.add_argument("--prereg", metavar="FILE", help="pre-registration file (default: prereg.toml)")
    p.add_argument("--allow-prereg-change", action="store_true",
                   help="judge even if prereg.toml changed since the run (outputs say NOT "
                        "PRE-REGISTERED, and the gate fails unless --accept-not-preregistered)")
    p.add_argument("--rng-seed", type=int, help="bootstrap seed (default: prereg.toml's rng_seed); "
                   "another value makes the verdict NOT PRE-REGISTERED (docs/gate.md)")
    p.add_argument("--n-resamples", type=int, help="number of resamples (default: prereg.toml's "
                   "n_resamples); another value makes the verdict NOT PRE-REGISTERED (docs/gate.md)")
    p.add_argument(ACCEPT_FLAG, action="store_true",
                   help="let a NOT PRE-REGISTERED verdict (an override above, a changed prereg.toml, "
                        "external --cells without a run manifest) pass the gate; the outputs still "
                        "say NOT PRE-REGISTERED")
    p.add_argument("--require-signature", action="store_true",
                   help="refuse a run whose seal is not signed with the key in $NORMADAPT_SEAL_KEY "
                        "(the grid signs its seal when that variable is set; docs/gate.md, section 4)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--no-calibration", action="store_true",
                   help="skip the simulated calibration of this design (otherwise read from the "
                        "run's calibration.json or the cache, else computed quickly: 5-15 s, cached)")
    p.add_argument("--charts", choices=("svg", "png"),
                   help="also write every chart as <out>/charts/<name>.svg|png (for papers)")
    return p


def _calibration(args, data, prereg, run_dir: Path | None, regime: str | None = None):
    """The calibration of this design (in the study's `regime`), or None; warnings to add to the verdict."""
    if args.no_calibration:
        return None, ("calibration skipped (--no-calibration): how far the intervals can be "
                      "trusted for this design was not measured",)
    from validation.calibrate import calibration_for_study
    try:
        return calibration_for_study(data, prereg, run_dir=run_dir, progress=_Progress(), regime=regime)
    except Exception as e:  # an optional extra must never cost a finished verdict
        return None, (f"calibration failed ({type(e).__name__}: {e}); the verdict does not depend on it",)


class _Progress:
    """Progress of the quick calibration on stderr: silent for its first 2 s, then a line every
    2 s (rewritten in place on a terminal), and a closing line with the seconds it took."""

    def __init__(self, stream=None, quiet_s: float = 2.0, every_s: float = 2.0) -> None:
        self.stream, self.quiet_s, self.every_s = stream or sys.stderr, quiet_s, every_s
        self.t0 = time.perf_counter()
        self.last = -1.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter() - self.t0
        if done < total and (now < self.quiet_s or now - self.last < self.every_s):
            return
        if done >= total and self.last < 0:
            return  # finished before anything was shown: nothing to close
        self.last = now
        tty = getattr(self.stream, "isatty", lambda: False)()
        text = (f"calibrating the intervals for this design (quick simulation, cached "
                f"afterwards): {done}/{total} experiments, {now:.0f} s")
        end = "\n" if done >= total or not tty else ""
        print(("\r" if tty else "") + text, end=end, file=self.stream, flush=True)


def _target(args) -> tuple[Path | None, Path]:
    """The run directory (None for external `--cells`) and the output folder."""
    if args.docs and not args.cells:
        raise InputError("`--docs` needs `--cells` (a run directory brings its own docs.parquet).")
    if args.cells:
        cells = Path(args.cells)
        return None, Path(args.out) if args.out else cells.parent / f"{cells.stem}.verdict"
    run_dir = resolve_run(args.run, args.runs_root)
    return run_dir, Path(args.out) if args.out else run_dir


def _load(args, run_dir: Path | None):
    """Every step count of the input (validation.inputs.sweep.StepsStudy) and the seal as checked.

    A run directory's seal and every file it lists are checked before any table is read, and the
    tables against the seal's facts after (validation.inputs.sealed)."""
    if run_dir is None:
        return load_steps(cells=Path(args.cells), docs=args.docs), None
    check = open_seal(run_dir, require_signature=args.require_signature)
    study = load_steps(run=run_dir)
    check_facts(run_dir, check, study)
    return study, check


def check_bootstrap_memory(data, n_resamples: int, setting: str) -> None:
    """Refuse, before any resampling, a bootstrap that cannot fit in memory (docs/gate.md, 5)."""
    cells = data.cells
    n_docs = None
    if data.docs is not None and data.docs.height:
        n_docs = int(data.docs.group_by("eval").agg(pl.col("doc_id").n_unique())["doc_id"].max())
    shape = (cells["seed"].n_unique(), cells["adapter"].n_unique(), cells["eval"].n_unique())
    need, budget = bootstrap_bytes(*shape, n_docs, n_resamples), memory_budget()
    if need > budget:
        fits = max(1, n_resamples * budget // need)
        raise InputError(
            f"`{setting} = {n_resamples}` with {shape[0]} seeds, {shape[1]} adapters, {shape[2]} users"
            + (f" and up to {n_docs} documents per user" if n_docs else "")
            + f" needs about {gib(need)} for the bootstrap, more than this machine can give ({gib(budget)}); "
            f"lower `{setting}` to at most about {fits} (`n_resamples` in prereg.toml is fixed before the run; "
            "`--n-resamples` makes the verdict NOT PRE-REGISTERED), or judge on a machine with more memory.")


def check_flags(args: argparse.Namespace) -> None:
    """Flag values and combinations that would do something other than asked: InputError (exit 2)."""
    for flag, value in (("--out", args.out), ("--run", args.run), ("--cells", args.cells), ("--docs", args.docs),
                        ("--prereg", args.prereg), ("--runs-root", args.runs_root)):
        if value is not None and not value.strip():   # Path("") is the current directory
            raise InputError(f"`{flag} {value!r}`: empty; pass a path, or leave `{flag}` out for its default.")
    if args.charts and args.no_report:
        raise InputError(f"`--charts {args.charts}` with `--no-report`: the charts are drawn with the report, so "
                         "nothing would be written; drop `--no-report` to get both, or drop `--charts`.")
    if args.require_signature and args.cells:
        raise InputError("`--require-signature` with `--cells`: external cells carry no seal, so there is no "
                         "signature to require; judge the grid's run directory (`--run DIR`) to check its "
                         "signature, or drop `--require-signature` to judge the external cells "
                         "(NOT PRE-REGISTERED).")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    made = None
    try:
        check_flags(args)
        run_dir, out = _target(args)
        made = out if not out.exists() else None  # an output folder that a refusal must not leave behind
        with ExitStack() as held:  # one verdict per directory, never beside a grid writing it
            for folder in dict.fromkeys(d for d in (run_dir, out) if d is not None):
                held.enter_context(RunLock(folder, "verdict", clean_below=False))
            return _judge_and_write(args, run_dir, out)
    except (InputError, PreregError, RunLocked, ValueError) as e:
        print(f"error: {term(e)}", file=sys.stderr)  # no raw control character reaches the terminal
        return EXIT_ERROR
    except OSError as e:
        print(f"error: cannot write to {e.filename or 'the output folder'}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if made is not None:
            try:
                made.rmdir()  # only when empty: nothing was written
            except OSError:
                pass


def _judge_and_write(args, run_dir: Path | None, out: Path) -> int:
    try:
        prereg = load_prereg(args.prereg or default_prereg_path())
        study, seal = _load(args, run_dir)
        status = check_prereg(prereg, study.manifest, allow_change=args.allow_prereg_change)
        if run_dir is not None:
            status = replace(with_unregistered(status, NOT_SEALED if seal.seal is None else None),
                             seal=seal.to_json())
        prereg, recorded_warnings = with_recorded_settings(prereg, study.manifest)  # omitted = as at the run
        primary, steps_warnings = primary_count(study, prereg)  # the gate's count (exit 2 if not trained)
        status = with_unregistered(status, unregistered_count(study, prereg))
        data = study.at(primary)
        check_users(prereg, len(data.users), f"`{data.source}`")
        check_routing(data, prereg)   # noise levels pre-registered; a gated routing criterion has its rows
        if args.n_resamples is not None and args.n_resamples < 1:
            raise InputError(f"`--n-resamples` must be a positive integer; got {args.n_resamples}.")
        if args.rng_seed is not None and args.rng_seed < 0:
            raise InputError(f"`--rng-seed` must be an integer >= 0; got {args.rng_seed}.")
        settings = Settings(prereg, n_resamples_flag=args.n_resamples, rng_seed_flag=args.rng_seed)
        status = with_overrides(status, settings.overrides(), accepted=args.accept_not_preregistered)
        check_bootstrap_memory(data, settings.n_resamples, settings.n_resamples_source)
        with warnings.catch_warnings(record=True) as raw:  # raw library warnings never reach
            warnings.simplefilter("always")                # the terminal: verdict.json keeps them
            resampled = resample_counts(study, settings)   # every count bootstrapped once, one set of draws
            verdict = judge(data, prereg, rng=np.random.default_rng(settings.rng_seed),
                            n_resamples=settings.n_resamples_flag, prereg_status=status,
                            resampled=resampled.get(primary) if primary is not None else None)
            verdict = replace(verdict, warnings=verdict.warnings + recorded_warnings + steps_warnings,
                              steps=judge_exploratory(study, primary, settings, prereg_status=status,
                                                      resampled=resampled))
            calibration, cal_warnings = _calibration(args, data, prereg, run_dir, regime=(
                verdict.bootstrap.regime.label if verdict.bootstrap.regime is not None else None))
            verdict, similarity = _similarity(verdict, data, run_dir)
            verdict, steps_analysis = _steps_analysis(verdict, resampled, settings, primary=primary)
        verdict = _with_raw_warnings(verdict, raw)
        verdict = replace(verdict, gate=preregistration_gate(verdict.gate, status))
        if cal_warnings:
            verdict = replace(verdict, warnings=verdict.warnings + tuple(cal_warnings))
        result = StudyVerdict(verdict, similarity, steps_analysis, calibration)
        texts = {"verdict.json": result.json_text(), "junit.xml": junit_xml(verdict)}
    except (InputError, PreregError, ValueError) as e:
        print(f"error: {term(e)}", file=sys.stderr)  # no raw control character reaches the terminal
        return EXIT_ERROR
    except Exception as e:
        traceback.print_exc()
        print(f"error: tool error ({type(e).__name__}: {e})", file=sys.stderr)
        return EXIT_ERROR
    report, note = (None, None) if args.no_report else _render_report(result, data)
    stale = [out / name for name, new in (("report.html", report), ("charts", args.charts))
             if new is None and (out / name).exists()]
    writers = {out / name: _text_writer(text) for name, text in texts.items()}
    writers[out / "report.html"] = None if report is None else _text_writer(report)
    writers[out / "charts"] = None if not args.charts else _charts_writer(result, data, args.charts)
    try:
        replace_together(writers)  # every output replaced, or none: never a new one beside an old one
    except OSError as e:
        print(f"error: cannot write the verdict's outputs to {out} ({e.filename or ''}: {e.strerror or e}); "
              "nothing was replaced", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:
        print(f"error: cannot write the charts ({type(e).__name__}: {e}); nothing was replaced", file=sys.stderr)
        return EXIT_ERROR
    print(result.text(str(data.source or "")), end="")
    print(verdict.steps.line())
    for old in stale:
        print(f"note: removed {old}, written by an earlier verdict"
              + (" (--no-report: no new report)" if args.no_report and old.name == "report.html" else ""),
              file=sys.stderr)
    if not args.no_report:
        print(note or f"report: {out / 'report.html'}", file=sys.stderr if note else sys.stdout)
    if args.charts:
        print(f"charts: {out / 'charts'}")
    print(f"outputs: {out / 'verdict.json'}, {out / 'junit.xml'}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(markdown_summary(verdict))
        except OSError as e:
            print(f"warning: cannot append to $GITHUB_STEP_SUMMARY ({summary}): {e}", file=sys.stderr)
    return verdict.exit_code


def _text_writer(text: str):
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def _render_report(result: StudyVerdict, data) -> tuple[str | None, str | None]:
    """The report page as text, or (None, why): a report that cannot be rendered is said, never fatal."""
    try:
        import reports
        return reports.render_report(result, data), None
    except Exception as e:
        return None, f"report failed ({type(e).__name__}: {e}); verdict.json and junit.xml are written"


def _charts_writer(result: StudyVerdict, data, fmt: str):
    def write(tmp: str) -> None:
        import reports
        reports.write_charts(result, data, tmp, fmt=fmt)
    return write


def _similarity(verdict, data, run_dir: Path | None) -> tuple[Verdict, Similarity | None]:
    """The domain-similarity structure (verdict.json key `similarity`); bad adapter files are
    an input error (exit 2), any other failure a warning (the verdict does not depend on it)."""
    try:
        return verdict, similarity_for_verdict(verdict, data, run_dir)
    except InputError:
        raise
    except Exception as e:
        return replace(verdict, warnings=verdict.warnings + (
            f"similarity failed ({type(e).__name__}: {e}); the verdict does not depend on it",)), None


def _steps_analysis(verdict: Verdict, resampled: dict[int, Resampled], settings: Settings,
                    primary: int | None = None) -> tuple[Verdict, StepsAnalysis | None]:
    """The training-step interaction (verdict.json key `steps_analysis`; docs/methods.md, section 12).

    `resampled`: every step count's arrays and bootstrap (`resample_counts`), the very draws each
    count was judged with, so nothing is resampled again and at the primary count every point
    estimate equals `users[]`; None with fewer than two counts. Bad input raises InputError
    (exit 2); a numerical failure is a warning, the verdict does not depend on it."""
    try:
        st = analyze_resampled(sorted(resampled.items()), settings.prereg, primary=primary)
    except InputError:
        raise
    except Exception as e:
        return replace(verdict, warnings=verdict.warnings + (
            f"step analysis failed ({type(e).__name__}: {e}); the verdict does not depend on it",)), None
    return verdict, st


def _with_raw_warnings(verdict, caught):
    """Library warnings caught while judging, once each, as `raw: ...` entries of verdict.json
    (`validation.text.outputs.verdict_text` counts them instead of printing them)."""
    seen = tuple(dict.fromkeys(f"raw: {w.category.__name__}: {str(w.message).splitlines()[0]}"
                               for w in caught))
    return replace(verdict, warnings=verdict.warnings + seen) if seen else verdict


if __name__ == "__main__":
    sys.exit(main())
