"""Load a report in headless Chromium, offline, and say what it drew.

The browser is driven over the Chrome DevTools Protocol through `--remote-debugging-pipe`
(JSON messages separated by NUL bytes on file descriptors 3 and 4), so nothing is needed
beyond the Debian `chromium` package: no driver download, no websocket library, no port.

Every request that is not `file:` or `data:` is refused (DevTools `Fetch` interception, the
network emulated offline, and host resolution mapped to nothing); refused URLs are reported.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

# What the page's own script publishes when every chart has been embedded (see report.html.j2).
_STATUS_JS = "JSON.stringify(window.__reportStatus || null)"

# Per chart container: its svg/canvas and how many data marks of each type it drew (marks of
# axes, legends and titles are not counted: a chart whose data failed still draws those).
_CHARTS_JS = """JSON.stringify(Array.from(document.querySelectorAll('.chart')).map(el => {
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
}))"""


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
    console_errors: tuple[str, ...]        # console.error/assert, uncaught exceptions, log errors
    console_messages: tuple[str, ...]      # everything the console printed, "level: text"
    refused_requests: tuple[str, ...]      # URLs that were not file:/data: (all refused)
    render_ms: float | None                # navigation start -> all charts embedded (page clock)
    wall_s: float                          # navigate -> status seen, measured from Python
    screenshot_png: bytes = field(repr=False, default=b"")
    text: str = field(repr=False, default="")  # document.body.innerText


class BrowserError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium driven over the DevTools pipe; use as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no Chromium found: install the Debian package `chromium` "
                               "or set CHROMIUM=/path/to/chrome")
        self.width, self.height = width, height
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._answers: dict[int, dict[str, Any]] = {}
        self.refused: list[str] = []           # URLs refused since the last load() began
        self._proc: subprocess.Popen | None = None

    # -- process -----------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="report-chromium-")
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()

        def _map_fds() -> None:  # in the child: its fd 3 reads our commands, fd 4 answers
            # go through fds >= 10 first so that neither dup2 clobbers the other's source
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            self.executable, "--headless=new", "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}", f"--window-size={self.width},{self.height}",
            "--no-first-run", "--no-default-browser-check", "--disable-gpu",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--disable-component-update", "--disable-default-apps", "--disable-dev-shm-usage",
            "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
            "--allow-file-access-from-files", "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with the sandbox
        try:
            try:
                self._proc = subprocess.Popen(
                    args, preexec_fn=_map_fds, pass_fds=(3, 4),  # kept open after preexec_fn
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            finally:
                os.close(to_child_r)
                os.close(from_child_w)
            self.send("Target.getBrowserContexts", timeout=30)  # first answer = browser is up
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc and self._proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except (BrowserError, OSError):
                    pass
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        finally:
            for fd in (self._to_child_w, self._from_child_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    # -- protocol ----------------------------------------------------------------------
    def _post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Write one command without waiting for its answer; returns its id."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            code = self._proc.poll() if self._proc else None
            raise BrowserError(f"Chromium ({self.executable}) exited (code {code}) before "
                               f"{method}; run it by hand with --headless to see why") from None
        return self._next_id

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 20) -> dict[str, Any]:
        want = self._post(method, params, session)
        deadline = time.monotonic() + timeout
        while want not in self._answers:
            for m in self._read(deadline, f"an answer to {method}"):
                self._dispatch(m)
        m = self._answers.pop(want)
        if "error" in m:
            raise BrowserError(f"{method}: {m['error']}")
        return m.get("result", {})

    def _dispatch(self, m: dict[str, Any]) -> None:
        if "id" in m:
            self._answers[m["id"]] = m
        elif m.get("method") == "Fetch.requestPaused":
            # answered at once, even in the middle of another command (navigation waits on it)
            p, session = m["params"], m.get("sessionId")
            url = p["request"]["url"]
            if url.startswith(("file:", "data:")):
                self._post("Fetch.continueRequest", {"requestId": p["requestId"]}, session)
            else:
                self.refused.append(url)
                self._post("Fetch.failRequest", {"requestId": p["requestId"],
                           "errorReason": "BlockedByClient"}, session)
        else:
            self._events.append(m)

    def _read(self, deadline: float, what: str) -> list[dict[str, Any]]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(f"timed out waiting for {what}")
        ready, _, _ = select.select([self._from_child_r], [], [], left)
        if not ready:
            raise BrowserError(f"timed out waiting for {what}")
        chunk = os.read(self._from_child_r, 1 << 20)
        if not chunk:
            raise BrowserError(f"Chromium exited (code {self._proc.poll()}) while waiting for {what}")
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\0")
        return [json.loads(c) for c in complete if c]

    def _pump(self, timeout: float) -> None:
        """Read whatever events arrive within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                for m in self._read(deadline, "events"):
                    self._dispatch(m)
        except BrowserError as e:
            if "timed out" not in str(e):
                raise

    # -- the one thing we do -----------------------------------------------------------
    def load(self, path: str | os.PathLike, timeout: float = 30, screenshot: bool = True) -> PageLoad:
        """Open `path` from file://, refuse all network, wait for the charts, inspect them."""
        url = Path(path).resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self.send(method, session=s)
        self.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                  "downloadThroughput": -1, "uploadThroughput": -1}, session=s)
        self.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session=s)
        self._events.clear()
        self.refused = refused = []
        console: list[str] = []
        errors: list[str] = []

        def handle_events() -> None:
            while self._events:
                ev = self._events.pop(0)
                method, p = ev.get("method"), ev.get("params", {})
                if method == "Network.requestWillBeSent":
                    req_url = p["request"]["url"]
                    if not req_url.startswith(("file:", "data:")) and req_url not in refused:
                        refused.append(req_url)
                elif method == "Runtime.consoleAPICalled":
                    text = " ".join(str(a.get("value", a.get("description", "")))
                                    for a in p.get("args", []))
                    console.append(f"{p['type']}: {text}")
                    if p["type"] in ("error", "assert"):
                        errors.append(text)
                elif method == "Runtime.exceptionThrown":
                    d = p["exceptionDetails"]
                    text = d.get("exception", {}).get("description") or d.get("text", "")
                    console.append(f"exception: {text}")
                    errors.append(text)
                elif method == "Log.entryAdded":
                    e = p["entry"]
                    console.append(f"{e['level']}: {e['text']} {e.get('url', '')}".rstrip())
                    if e["level"] == "error":
                        errors.append(e["text"])

        def evaluate(expr: str) -> Any:
            r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                          session=s)
            handle_events()
            return json.loads(r["result"]["value"]) if r["result"].get("value") else None

        t0 = time.monotonic()
        self.send("Page.navigate", {"url": url}, session=s)
        status = None
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            self._pump(0.05)
            handle_events()
            status = evaluate(_STATUS_JS)
            if status is not None:
                break
        wall = time.monotonic() - t0
        self._pump(0.2)  # late console messages
        handle_events()
        charts = tuple(ChartDrawn(**c) for c in (evaluate(_CHARTS_JS) or []))
        text = evaluate("JSON.stringify(document.body ? document.body.innerText : '')") or ""
        png = self._screenshot(s) if screenshot else b""
        handle_events()
        self.send("Target.closeTarget", {"targetId": target})
        return PageLoad(
            url=url, status=status, charts=charts, console_errors=tuple(errors),
            console_messages=tuple(console), refused_requests=tuple(refused),
            render_ms=None if status is None else status.get("ms"), wall_s=wall,
            screenshot_png=png, text=text,
        )

    def _screenshot(self, s: str) -> bytes:
        import base64

        size = self.send("Page.getLayoutMetrics", session=s)["cssContentSize"]
        height = min(int(size["height"]) + 1, 16000)
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": height,
                  "deviceScaleFactor": 1, "mobile": False}, session=s)
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=s, timeout=60)
        return base64.b64decode(shot["data"])


def load_report(path: str | os.PathLike, timeout: float = 30, screenshot: bool = True) -> PageLoad:
    """One-shot: start Chromium, load `path` offline, return what it drew."""
    with Chromium() as browser:
        return browser.load(path, timeout=timeout, screenshot=screenshot)
