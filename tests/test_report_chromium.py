"""The html report in a real browser: headless Chromium loads it, draws it, and logs no errors."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator.report import render

pytestmark = pytest.mark.chromium

DATA = Path(__file__).parent / "data" / "summaries"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def load(name: str) -> dict[str, Any]:
    """A fixture summary by file stem."""
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of the Chromium binary; a missing browser fails under CI and skips elsewhere."""
    path = next(
        (
            p
            for p in (
                "/usr/bin/chromium",
                shutil.which("chromium"),
                shutil.which("chromium-browser"),
            )
            if p and os.access(p, os.X_OK)
        ),
        None,
    )
    if path is None:
        message = "headless Chromium not found (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; it is required when CI is set")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A rich html report on disk: retries, polls, a gate, a comparison and an RTO trend."""
    summary = load("failover_succeeded")
    history = [load("failover_minimal"), load("failover_failed_timeout"), load("failover_resumed")]
    html = render(summary, "html", compare=load("failover_resumed"), history=history)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path, summary


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a throwaway profile; fails the test on a non-zero exit."""
    profile = tmp_path / "profile"
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class _Bars(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "rect" and "bar" in found.get("class", "").split():
            self.bars.append((found["data-step"], found["data-host"], found["data-attempt"]))


def host_attempts(summary: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(step, host, attempt) for every host attempt of the raw summary (hostless steps: one)."""
    out = set()
    for step in summary["steps"]:
        if step.get("start_offset_s") is None or step.get("carried_from"):
            continue
        if not step["hosts"]:
            out.add((step["id"], "", "1"))
        for host in step["hosts"]:
            out |= {(step["id"], host["host"], str(a["n"])) for a in host["attempts"]}
    return out


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG in pure Python: width, height, and one bytes row per line."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_ = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind_ == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind_ == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind_ == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind_ == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def test_dom_has_a_bar_for_every_host_attempt(
    chromium: str, page: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The DOM Chromium builds from the report has one rect.bar per host attempt."""
    path, summary = page
    dom = run_chromium(chromium, tmp_path, "--dump-dom", path.as_uri()).stdout
    parser = _Bars()
    parser.feed(dom)
    assert sorted(parser.bars) == sorted(host_attempts(summary))
    assert 'class="gantt"' in dom and 'class="trend"' in dom


def test_screenshot_is_not_blank(
    chromium: str, page: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A 1280×2000 screenshot of the report shows a rich picture, not a blank page."""
    path, _ = page
    shot = tmp_path / "report.png"
    run_chromium(
        chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri()
    )
    width, bpp, rows = png_pixels(shot.read_bytes())
    assert (width, len(rows)) == (1280, 2000)
    colours = set()
    white = 0
    for row in rows[::2]:
        for x in range(0, width * bpp, bpp * 2):
            pixel = row[x : x + 3]
            colours.add(pixel)
            white += pixel == b"\xff\xff\xff"
    sampled = len(rows[::2]) * len(range(0, width * bpp, bpp * 2))
    assert len(colours) > 200, f"only {len(colours)} distinct colours"
    assert white / sampled < 0.97, "the page is almost entirely white"


def console_problems(chromium: str, page: Path, tmp_path: Path) -> list[str]:
    """Console lines Chromium logs while loading ``page``: errors, exceptions, failed loads.

    The report has no script, so any console line attributed to the page is a problem.
    """
    result = run_chromium(
        chromium, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()
    )
    return [
        line
        for line in result.stderr.splitlines()
        if ("CONSOLE" in line and (page.as_uri() in line or "Uncaught" in line))
        or "Failed to load resource" in line
    ]


def test_console_check_detects_page_errors(chromium: str, tmp_path: Path) -> None:
    """The console check itself catches a page that throws (so a pass below means something)."""
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>throw new Error('kaput')</script></body></html>")
    assert any("kaput" in line for line in console_problems(chromium, broken, tmp_path))


def test_page_loads_without_console_errors(
    chromium: str, page: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Loading the report logs no page errors (uncaught exceptions, console errors, failed loads)."""
    path, _ = page
    problems = console_problems(chromium, path, tmp_path)
    assert not problems, "\n".join(problems)
