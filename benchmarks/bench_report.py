"""Benchmark of the report page for a default-size study (target: <= 3 MB, rendered in <= 5 s).

    python benchmarks/bench_report.py [--repeats 3] [--resamples 10000] [--out DIR]

The study has the default run's shape: 3 users, 5 seeds, base + pooled, 50 documents per user,
10,000 bootstrap resamples, a 100-step training log per adapter and seed (judged by
`validation.judge`). Prints the page's size, the Python time to write it, and the browser render
time: the system Chromium, headless and driven by Playwright (offline, file://), from navigation
start until every chart is drawn, as measured by the page's own clock. The machine load is
printed beside.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the example study

import reports  # noqa: E402
from tests.support import examples  # noqa: E402

SIZE_TARGET = 3_000_000
RENDER_TARGET_MS = 5_000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=None, help="keep report.html and screenshot here")
    args = p.parse_args()

    load = os.getloadavg()
    print(f"host: {platform.node()}  cpus: {os.cpu_count()}  python {platform.python_version()}")
    print(f"load average before (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    verdict, data = examples.full_study(seed=0, n_resamples=args.resamples)
    print(f"study: {len(data.users)} users x {len(data.seeds)} seeds, controls "
          f"{', '.join(data.controls)}, {args.resamples} resamples, train log "
          f"{data.train_log.height} rows")

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-report-"))
    path = out / "report.html"
    writes = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        reports.write_report(verdict, data, path)
        writes.append(time.perf_counter() - t0)
    size = path.stat().st_size
    print(f"size: {size / 1e6:.2f} MB ({size} bytes; target <= {SIZE_TARGET / 1e6:.0f} MB) "
          f"{'OK' if size <= SIZE_TARGET else 'OVER'}")
    print(f"python write_report: median {statistics.median(writes):.2f} s "
          f"(first {writes[0]:.2f} s, includes building the Vega bundle once)")

    from tests.support.browser import Chromium, find_chromium, missing
    if missing():
        print(f"render: skipped ({missing()})")
        return 0 if size <= SIZE_TARGET else 1
    exe = find_chromium()
    renders, walls = [], []
    with Chromium(exe) as browser:
        for i in range(args.repeats):
            page = browser.load(path, screenshot=(i == 0))
            if not (page.status and page.status.get("ok")) or page.console_errors:
                print(f"render FAILED: status {page.status}, errors {page.console_errors}")
                return 1
            if i == 0:
                (out / "report.png").write_bytes(page.screenshot_png)
            renders.append(page.render_ms)
            walls.append(page.wall_s)
    worst = max(renders)
    print(f"render ({exe}, {len(page.charts)} charts, offline): median "
          f"{statistics.median(renders):.0f} ms, worst {worst:.0f} ms (target <= "
          f"{RENDER_TARGET_MS} ms) {'OK' if worst <= RENDER_TARGET_MS else 'OVER'}; "
          f"navigate->drawn wall {statistics.median(walls):.2f} s")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"files: {path}, {out / 'report.png'}")
    return 0 if size <= SIZE_TARGET and worst <= RENDER_TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
