"""Load a report in headless Chromium, offline, and say what it drew (test support only).

Playwright's Python package (the `test` extra) drives the system Chromium through
`executable_path` (Debian package `chromium`); `playwright install` is never needed. Every
request that is not `file:` or `data:` is refused through Playwright's routing API, the browser
context is offline, service workers are blocked and host names resolve to nothing; every URL
the page tried is reported in `PageLoad.refused_requests`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
LOCAL_SCHEMES = ("file:", "data:")

# What the page's own script publishes when every chart has been embedded (see report.html.j2).
_STATUS_JS = "() => window.__reportStatus || null"

# Per chart container: its svg/canvas and how many data marks of each type it drew (marks of
# axes, legends and titles are not counted: a chart whose data failed still draws those).
_CHARTS_JS = """() => Array.from(document.querySelectorAll('.chart')).map(el => {
  const svg = el.querySelector('svg');
  const counts = {};
  if (svg) {
    svg.querySelectorAll('g.role-mark').forEach(g => {
      if (g.closest('.role-axis, .role-legend, .role-title')) return;
      const type = (g.getAttribute('class').match(/mark-(\\w+)/) || [])[1];
      if (!type || type === 'group') return;
      counts[type] = (counts[type] || 0) + g.children.length;
    });
  }
  const box = el.getBoundingClientRect();
  return {id: el.id, svg: !!svg, canvas: !!el.querySelector('canvas'), marks: counts,
          width: box.width, height: box.height};
})"""


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None. `CHROMIUM` in the environment wins."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing() -> str | None:
    """Why a browser test cannot run here (a skip reason), or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright missing: pip install -e '.[test]' (the test extra)"
    if find_chromium() is None:
        return ("Chromium not installed: `apt-get install chromium` (Debian; .ci/run installs it) "
                "or set CHROMIUM=/path/to/chrome")
    return None


@dataclass(frozen=True)
class ChartDrawn:
    id: str
    svg: bool
    canvas: bool
    marks: dict[str, int]   # data marks drawn, by Vega mark type (rect, symbol, line, rule, text)
    width: float
    height: float

    @property
    def drew(self) -> bool:
        return self.svg and sum(self.marks.values()) > 0 and self.width > 0 and self.height > 0


@dataclass(frozen=True)
class PageLoad:
    """What a headless Chromium saw when loading one page."""

    url: str
    status: dict[str, Any] | None          # window.__reportStatus: {ok, charts, ms, error?}
    charts: tuple[ChartDrawn, ...]
    console_errors: tuple[str, ...]        # console.error/assert, uncaught exceptions, load errors
    console_messages: tuple[str, ...]      # everything the console printed, "level: text"
    refused_requests: tuple[str, ...]      # URLs that were not file:/data: (all refused)
    render_ms: float | None                # navigation start -> all charts embedded (page clock)
    wall_s: float                          # navigate -> status seen, measured from Python
    screenshot_png: bytes = field(repr=False, default=b"")
    text: str = field(repr=False, default="")  # document.body.innerText


@dataclass
class OpenPage:
    """A page open in `Chromium.open_page`: the live Playwright page and what it logged so far."""

    url: str
    page: Any                              # playwright.sync_api.Page
    status: dict[str, Any] | None          # window.__reportStatus, None when never published
    wall_s: float                          # navigate -> status seen, measured from Python
    refused: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class BrowserError(RuntimeError):
    pass


class Chromium:
    """A headless system Chromium driven by Playwright; use as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no Chromium found: install the Debian package `chromium` "
                               "or set CHROMIUM=/path/to/chrome")
        self.width, self.height = width, height

    def __enter__(self) -> Chromium:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable,
                args=["--host-resolver-rules=MAP * ~NOTFOUND", "--allow-file-access-from-files"])
        except PlaywrightError as e:
            self._playwright.stop()
            raise BrowserError(f"Chromium ({self.executable}) did not start: {e}; run it by "
                               "hand with --headless to see why") from None
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._browser.close()
        finally:
            self._playwright.stop()

    @contextmanager
    def open_page(self, path: str | os.PathLike, timeout: float = 30) -> Iterator[OpenPage]:
        """Open `path` from file:// with all network refused; wait until the page publishes
        `window.__reportStatus` (or `timeout` s); yield the live Playwright page with what it logged."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        url = Path(path).resolve().as_uri()
        context = self._browser.new_context(
            viewport={"width": self.width, "height": self.height}, offline=True,
            service_workers="block")
        opened = OpenPage(url=url, page=None, status=None, wall_s=0.0)

        def note_refused(request_url: str) -> None:
            if not request_url.startswith(LOCAL_SCHEMES) and request_url not in opened.refused:
                opened.refused.append(request_url)

        def route(r) -> None:
            if r.request.url.startswith(LOCAL_SCHEMES):
                r.continue_()
            else:
                note_refused(r.request.url)
                r.abort("blockedbyclient")

        def on_console(msg) -> None:
            opened.console.append(f"{msg.type}: {msg.text}")
            if msg.type in ("error", "assert"):
                opened.errors.append(msg.text)

        def on_page_error(exc) -> None:
            opened.console.append(f"exception: {exc}")
            opened.errors.append(str(exc))

        try:
            context.route("**/*", route)
            page = opened.page = context.new_page()
            page.on("request", lambda request: note_refused(request.url))
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            t0 = time.monotonic()
            page.goto(url, timeout=timeout * 1000)
            try:
                left_ms = max(1.0, (t0 + timeout - time.monotonic()) * 1000)
                opened.status = page.wait_for_function(_STATUS_JS, timeout=left_ms).json_value()
            except PlaywrightTimeout:
                opened.status = None
            opened.wall_s = time.monotonic() - t0
            page.wait_for_timeout(200)  # late console messages
            yield opened
        finally:
            context.close()

    def load(self, path: str | os.PathLike, timeout: float = 30, screenshot: bool = True) -> PageLoad:
        """Open `path` from file://, refuse all network, wait for the charts, inspect them."""
        with self.open_page(path, timeout) as opened:
            page = opened.page
            charts = tuple(ChartDrawn(**c) for c in page.evaluate(_CHARTS_JS))
            text = page.evaluate("() => document.body ? document.body.innerText : ''")
            png = page.screenshot(full_page=True, timeout=60_000) if screenshot else b""
        status = opened.status
        return PageLoad(
            url=opened.url, status=status, charts=charts, console_errors=tuple(opened.errors),
            console_messages=tuple(opened.console), refused_requests=tuple(opened.refused),
            render_ms=None if status is None else status.get("ms"), wall_s=opened.wall_s,
            screenshot_png=png, text=text,
        )
