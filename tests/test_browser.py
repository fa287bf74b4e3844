"""The built book as a reader sees it: the main results page opened in headless Chromium."""

import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image, ImageStat

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars",
         "--virtual-time-budget=10000"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it in CI)")]


class Page(HTMLParser):
    """The tables (their header cells) and images of a rendered DOM."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._header = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "th" and self.tables:
            self._header = ""
        elif tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        if self._header is not None:
            self._header += data

    def handle_endtag(self, tag):
        if tag == "th" and self._header is not None:
            self.tables[-1].append(self._header.strip())
            self._header = None


def chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def test_main_results_page_shows_its_table_and_figures(smoke_book):
    assert smoke_book.build.returncode == 0
    page = smoke_book.html / "results" / "pages" / "06_results.html"
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    parsed = Page()
    parsed.feed(dom.stdout)
    headers = [h for table in parsed.tables for h in table]
    assert "overall % [95% CI]" in headers and "Type 1 %" in headers and "source" in headers
    figures = [src for src in parsed.images if "_images/" in src]
    assert figures, "the accuracy figure is missing"
    for src in figures:  # every figure the page shows is there and is a real image
        with Image.open((page.parent / src).resolve()) as image:
            assert min(image.size) > 100
    shots = smoke_book.root / "_build" / "screenshots"
    shots.mkdir(exist_ok=True)
    shot = shots / "06_results.png"
    result = chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        assert max(ImageStat.Stat(image.convert("L")).stddev) > 20  # not a blank page
    print(f"screenshot: {shot}")
