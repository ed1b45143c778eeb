"""`dpbench leaderboard --html`: one self-contained page per board, checked as markup and, where
a Chromium is installed, as rendered in headless Chromium."""

import html.parser
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dpbench.cli import cli

COMMITTED = sorted((Path(__file__).resolve().parents[1] / "leaderboards").glob("*.json"))
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)


class Page(html.parser.HTMLParser):
    """The page's table cells, image sources, run sections and links to anything outside it."""

    def __init__(self):
        super().__init__()
        self.cells, self.images, self.runs, self.external, self._cell = [], [], [], [], None
        self.curves, self._curve = {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("td", "th"):
            self._cell = ""
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "details":
            self.runs.append(attrs.get("id"))
        if tag == "svg" and attrs.get("class") == "curve":
            self._curve = attrs.get("aria-label")
        if tag == "polyline" and self._curve is not None:
            self.curves[self._curve] = attrs.get("points")
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(" ".join(self._cell.split()))
            self._cell = None


@pytest.fixture
def toy_page(toy_plugin, toy_suite, tmp_path):
    """A toy board's page, with one run's sample planted with markup that must come out escaped."""
    path, runs = str(toy_suite()), ["--runs-dir", str(tmp_path / "runs")]
    assert CliRunner().invoke(cli, ["run", path, *runs]).exit_code == 0
    run = next((tmp_path / "runs" / "toy").glob("*noisy_unigram__eps1__seed0*"))
    (run / "samples.json").write_text(json.dumps(["<script>alert(1)</script> w1 w2"]))
    (run / "state" / "monitor.json").write_text(json.dumps({"history": [  # a method's per-round monitor
        {"checkpoint": 0, "validation_accuracy": 0.25, "fid": 3.0, "note": "base"},
        {"checkpoint": 1, "validation_accuracy": 0.5, "fid": "nan"},
        {"checkpoint": 2, "validation_accuracy": 0.375, "fid": 1.0}]}))
    out = CliRunner().invoke(cli, ["leaderboard", path, *runs, "--out", str(tmp_path / "boards"), "--html"])
    assert out.exit_code == 0, out.output
    return tmp_path / "boards" / "toy.html"


def test_the_page_holds_the_tables_plot_runs_and_provenance(toy_page):
    text = toy_page.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    assert {"noisy_unigram", "public_only", "nonprivate"} <= set(page.cells)
    assert any(" ± " in cell for cell in page.cells)  # means with their intervals
    assert {"gap closed", "vs best other", "vs synthetic public", "100.0%"} <= set(page.cells)
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")  # embedded
    assert len(page.runs) == 8 and all(page.runs)  # one section per run (2 seeds x 4 rows)
    assert "ε (target / from ledger)" in page.cells and "signal_norm" in page.cells  # details, diagnostics
    assert any(cell.startswith("dpbench run ") for cell in page.cells)  # the command that produced it
    assert page.external == []  # nothing fetched at view time
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # the monitor as curves: one per numeric column with two finite points, the index excluded
    assert page.curves == {"validation_accuracy": "4.0,36.0 80.0,4.0 156.0,20.0", "fid": "4.0,4.0 156.0,36.0"}
    assert "validation_accuracy: 0.25 → 0.375 (0.25–0.5)" in text


def _render(page: Path, tmp_path: Path) -> tuple[np.ndarray, str]:
    """The page as headless Chromium draws it (RGB 0..255; tall enough for a board whose tables put
    its plot ~4,000 px down) and its DOM after loading."""
    import matplotlib.image

    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,12000"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    return (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int), dom


def _plot_drawn(pixels: np.ndarray) -> bool:
    """The embedded plot is on screen: its methods' colours (matplotlib's C0, C1, C2) cover some area."""
    colours = ([31, 119, 180], [255, 127, 14], [44, 160, 44])
    return sum(int((np.abs(pixels - colour).sum(axis=-1) < 12).sum()) for colour in colours) > 300


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(toy_page, tmp_path):
    pixels, dom = _render(toy_page, tmp_path)
    assert "noisy_unigram" in dom and " ± " in dom and "Provenance" in dom
    assert pixels.std() > 10 and _plot_drawn(pixels)


def test_every_committed_board_has_its_plot_and_page():
    assert COMMITTED
    for board in COMMITTED:
        assert board.with_suffix(".png").is_file() and board.with_suffix(".html").is_file(), board.name


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (Debian: apt-get install chromium)")
@pytest.mark.parametrize("board", COMMITTED, ids=lambda path: path.stem)
def test_committed_pages_render_in_headless_chromium(board, tmp_path):
    rows = json.loads(board.read_text())["rows"]
    pixels, dom = _render(board.with_suffix(".html"), tmp_path)
    assert all(row["method"] in dom for row in rows) and "Provenance" in dom
    assert pixels.std() > 10 and _plot_drawn(pixels)
