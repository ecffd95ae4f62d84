"""The HTML reports in a real headless browser (Debian's chromium), driven over the DevTools protocol.

Each page is opened from a file: URL. The test listens to every request the page makes, every console
message, log entry and uncaught exception, checks that the charts were laid out and painted (pixels of
each series' colour in a screenshot of the chart), prints the page to PDF, and keeps full-page screenshots.
The protocol runs over a pipe (--remote-debugging-pipe), so nothing beyond the standard library is needed.
Set SELECTFLOW_SCREENSHOTS=DIR to keep the screenshots.
"""

import base64
import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import polars as pl
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)")

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe"]
# Group names that would run script or fetch a URL if they reached the page unescaped.
HOSTILE_GROUP = '<img src="http://127.0.0.1:9/leak.png" onerror="console.error(\'escaped\')">'
HOSTILE_LABEL = "<script>console.error('label')</script>"


class Chromium:
    """Headless chromium over the DevTools pipe: chromium reads commands on fd 3 and writes replies on fd 4."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="selectflow-chromium-")
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        # Copies above fd 10, so moving them onto 3 and 4 in the child never clobbers one with the other.
        child_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(out_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def wire_pipes():  # in the child, before exec; dup2 leaves the new fds inheritable
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.stderr = open(Path(self.profile) / "stderr.log", "wb")
        self.proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     preexec_fn=wire_pipes, close_fds=False)
        for fd in (cmd_r, out_w, child_r, child_w):
            os.close(fd)
        self.cmd, self.out = cmd_w, out_r
        self.buffer = b""
        self.last_id = 0
        self.events: list[dict] = []

    def close(self):
        for fd in (self.cmd, self.out):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            if select.select([self.out], [], [], left)[0]:
                chunk = os.read(self.out, 1 << 20)
                if not chunk:
                    raise EOFError(f"chromium exited (code {self.proc.poll()}); see {self.stderr.name}")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._message(deadline))

    def settle(self, seconds: float) -> None:
        """Collect events for a while longer: late requests or errors would show up here."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._message(deadline))
        except TimeoutError:
            pass

    def open(self, path: Path) -> "PageVisit":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        url = path.resolve().as_uri()
        start = len(self.events)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        self.settle(1.0)
        return PageVisit(self, session, url, [e for e in self.events[start:] if e.get("sessionId") == session])


class PageVisit:
    def __init__(self, browser: Chromium, session: str, url: str, events: list[dict]):
        self.browser, self.session, self.url, self.events = browser, session, url, events

    def _of(self, method: str) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == method]

    @property
    def requests(self) -> list[str]:
        """Every URL the page asked for, the page itself excepted."""
        return [p["request"]["url"] for p in self._of("Network.requestWillBeSent") if p["request"]["url"] != self.url]

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, log errors (CSP violations, failed loads) and failed requests."""
        found = [f"console.{p['type']}: {p['args']}" for p in self._of("Runtime.consoleAPICalled") if p["type"] in ("error", "assert")]
        found += [f"exception: {p['exceptionDetails'].get('text')}" for p in self._of("Runtime.exceptionThrown")]
        found += [f"log {p['entry']['source']}: {p['entry']['text']}" for p in self._of("Log.entryAdded") if p["entry"]["level"] == "error"]
        found += [f"request failed: {p.get('errorText') or p.get('blockedReason')}" for p in self._of("Network.loadingFailed")]
        return found

    def evaluate(self, expression: str):
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=self.session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, clip: dict | None = None) -> bytes:
        """PNG of the whole page, or of a clip {x, y, width, height} in page coordinates."""
        if clip is None:
            size = self.browser.send("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000)}
        params = {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}}
        return base64.b64decode(self.browser.send("Page.captureScreenshot", params, session=self.session)["data"])

    def pdf(self) -> bytes:
        return base64.b64decode(self.browser.send("Page.printToPDF", {"printBackground": True}, session=self.session)["data"])


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit truecolour PNG (what chromium writes), undoing the five row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    pixels, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.extend(zip(line[0::bpp], line[1::bpp], line[2::bpp]))
        prev = line
    return width, height, pixels


def select_run(corpus, out, sampler, budget, seed):
    from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
    from selectflow.flows.pipeline import select_subset

    select_subset(CorpusParams(path=str(corpus), id_column="id", group_column="source", label_column="source"),
                  EncoderParams(device="cpu", batch_size=32), SelectionParams(sampler=sampler, budget=budget, seed=seed),
                  OutputParams(out_dir=str(out)))
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory, bundled_slice, prefect_harness):
    """A real select report and a real comparison over the bundled slice, two of its sources renamed to hostile strings."""
    from selectflow.tasks.reporting.comparison import compare_runs

    base = tmp_path_factory.mktemp("browser")
    df = pl.read_parquet(bundled_slice)
    first, second = df["source"].unique(maintain_order=True).to_list()[:2]
    renamed = {first: HOSTILE_GROUP, second: HOSTILE_LABEL + "unbroken" * 30}  # a long token must wrap, not widen the page
    corpus = base / "hostile.parquet"
    df.with_columns(pl.col("source").replace(renamed)).write_parquet(corpus)
    kmq = select_run(corpus, base / "kmq", "kmeans", 0.25, 0)
    rnd = select_run(corpus, base / "rnd", "random", 16, 1)
    compare_runs([str(kmq), str(rnd)], str(base / "compare"))
    return {"report": kmq / "report.html", "compare": base / "compare" / "compare.html"}


@pytest.fixture(scope="module")
def browser():
    chromium = Chromium()
    yield chromium
    chromium.close()


def test_the_harness_sees_requests_and_console_errors(browser, tmp_path):
    # Without this, a browser that silently recorded nothing would pass every test below.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script></body></html>')
    visit = browser.open(bad)
    assert visit.requests == ["http://127.0.0.1:9/x.png"]
    assert any("boom" in e for e in visit.errors) and any("request failed" in e for e in visit.errors)


# Colour classes of the painted charts: the pool's grey and the selection's orange, blue and green.
SERIES = {"orange": lambda r, g, b: r > 190 and 50 < g < 140 and b < 100,
          "blue": lambda r, g, b: r < 110 and 100 < g < 170 and b > 180,
          "green": lambda r, g, b: r < 110 and g > 110 and b < 110,
          "grey": lambda r, g, b: 140 < r < 200 and abs(r - g) < 15 and b - r > 5}


def check_page(browser, path: Path, shots: Path, map_title: str, colours: tuple[str, ...]) -> PageVisit:
    visit = browser.open(path)
    assert visit.requests == [], "the page asked for other resources"
    assert visit.errors == [], "the browser logged errors"
    # Hostile group names are shown as text: they neither ran nor fetched anything (checked above).
    text = visit.evaluate("document.body.innerText")
    assert HOSTILE_GROUP in text and HOSTILE_LABEL in text
    assert visit.evaluate("document.querySelectorAll('body script, body img').length") == 0
    # Readable: nothing wider than the window.
    assert visit.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    charts = json.loads(visit.evaluate(
        "JSON.stringify([...document.querySelectorAll('svg.chart')].map(s => {const r = s.getBoundingClientRect();"
        " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height, marks: s.querySelectorAll('circle, rect').length,"
        " label: s.getAttribute('aria-label')}}))"))
    assert len(charts) >= 4 and all(c["width"] > 200 and c["height"] > 80 and c["marks"] > 1 for c in charts), charts
    # The map, painted: screenshot just that chart and count pixels of each series' colour.
    chart = next(c for c in charts if c["label"] == map_title)
    png = visit.screenshot({k: chart[k] for k in ("x", "y", "width", "height")})
    width, height, pixels = decode_png(png)
    assert (width, height) == (round(chart["width"]), round(chart["height"]))
    painted = {name: sum(1 for p in pixels if test(*p)) for name, test in SERIES.items()}
    assert all(painted[c] >= 20 for c in colours), painted
    whole = visit.screenshot()
    assert whole[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", whole[16:24])[0] == 1200  # full-page PNG, window width
    (shots / f"{path.stem}.png").write_bytes(whole)
    pdf = visit.pdf()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) >= 2  # printable, over several pages
    return visit


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    keep = os.environ.get("SELECTFLOW_SCREENSHOTS")
    folder = Path(keep) if keep else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_select_report_loads_renders_and_stays_offline(browser, pages, shots):
    visit = check_page(browser, pages["report"], shots, "First two principal components of the embeddings",
                       ("orange", "grey"))
    assert "Selection report: kmeans, 20 of 80 rows" in visit.evaluate("document.querySelector('h1').innerText")
    assert (shots / "report.png").stat().st_size > 50_000


def test_compare_report_loads_renders_and_stays_offline(browser, pages, shots):
    visit = check_page(browser, pages["compare"], shots, "All runs on one map", ("orange", "blue", "grey"))
    headings = visit.evaluate("[...document.querySelectorAll('h2')].map(h => h.innerText)")
    assert headings == ["Runs", "Overlap", "Rows only one run picked", "Diversity and coverage side by side",
                        "Composition against the pool", "Shared map"]
    assert (shots / "compare.png").stat().st_size > 50_000


def max_significant_digits(text: str) -> int:
    """The most significant digits of any decimal number in `text` (leading zeros do not count: 0.06292 has 4)."""
    digits = [len(re.sub(r"^0+", "", m.replace(".", ""))) for m in re.findall(r"\d+\.\d+", text.replace(",", ""))]
    return max(digits, default=0)


def test_select_report_summary_reads_well(browser, pages, shots):
    visit = browser.open(pages["report"])
    # The headline against random comes first in the summary, with a margin per measure.
    headline = visit.evaluate("document.querySelector('#summary p.headline').innerText")
    assert re.match(r"^(Better than|Worse than|On par with) random on ", headline), headline
    verdict = visit.evaluate("[...document.querySelectorAll('#summary table.verdict tbody tr')].map(r => r.innerText)")
    assert [row.split(":")[0] for row in verdict] == ["coverage", "near-duplicates", "label coverage"]
    assert all(re.search(r"(lower|higher|fewer|more)", row) and re.search(r"(better|worse|on par)\s*$", row) for row in verdict)
    # Numbers rounded for a reader everywhere (no 16-digit floats); \d\.\d{5,} alone would flag 0.06292, which has 4.
    text = visit.evaluate("document.body.innerText")
    assert max_significant_digits(text) <= 4, [m for m in re.findall(r"\d+\.\d{5,}", text)]
    # The diagnostics hold no Python list or dict dumps; long vectors are summarised.
    diagnostics = visit.evaluate("document.querySelector('table.diagnostics').innerText")
    assert "[" not in diagnostics and "{" not in diagnostics and "next round options" in diagnostics
    # Every table's columns are explained; the score column says what it is for this sampler.
    assert visit.evaluate("document.querySelectorAll('table:not(.inner)').length") == visit.evaluate(
        "document.querySelectorAll('ul.colnotes').length")
    assert "score: for kmeans: " in text
    # A screenshot of the summary section, kept with the others for a person to review.
    for selector, name in (("#summary", "report-summary.png"), ("table.diagnostics", "report-diagnostics.png")):
        box = json.loads(visit.evaluate(f"JSON.stringify((() => {{const r = document.querySelector('{selector}').getBoundingClientRect();"
                                        " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}})())"))
        png = visit.screenshot(box)
        width, height, pixels = decode_png(png)
        assert (width, height) == (round(box["width"]), round(box["height"])) and height > 100
        assert sum(1 for p in pixels if max(p) < 160) > 1000, f"{name}: hardly any text painted"
        (shots / name).write_bytes(png)
