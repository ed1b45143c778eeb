"""`dpbench plot`: the picture of a board, and the gap bars it draws."""

import math

import pytest
from click.testing import CliRunner

from dpbench.cli import cli
from dpbench.plots import gap_bars

METRIC = "e/accuracy"


def _row(method, epsilon, mean, ci95=None, reference=None, gap=None):
    return {"dataset": "d", "method": method, "reference": reference, "epsilon": epsilon, "gap_closed": gap,
            "metrics": {METRIC: {"mean": mean, "ci95": ci95}}}


ROWS = [_row("public_only", 0.0, 0.10, reference="epsilon_zero"),
        _row("nonprivate", math.inf, 0.20, 0.004, reference="epsilon_infinity"),
        _row("synthetic_public", 0.0, 0.11, 0.002, reference="synthetic_public", gap=0.1),
        _row("a", 7.0, 0.15, 0.01, gap=0.5), _row("a", 1.0, 0.12, 0.02, gap=0.2),
        _row("b", 1.0, 0.13, None, gap=0.3), _row("a", math.inf, 0.18, 0.01, gap=0.8)]


def test_gap_bars_show_synthetic_public_then_each_method_at_the_smallest_finite_epsilon():
    epsilon, bars = gap_bars(ROWS, METRIC, None)
    assert epsilon == 1.0
    assert [(name, gap) for name, gap, _ in bars] == [("synthetic_public", 0.1), ("a", 0.2), ("b", 0.3)]
    assert [err for _, _, err in bars] == pytest.approx([0.02, 0.2, 0.0])  # half-width / (0.20 - 0.10)
    assert [name for name, _, _ in gap_bars(ROWS, METRIC, 7.0)[1]] == ["synthetic_public", "a"]
    assert gap_bars([r for r in ROWS if r["reference"] != "epsilon_infinity"], METRIC, None)[1] == []


def test_plot_writes_a_png_of_the_board(toy_plugin, toy_suite, tmp_path):
    import matplotlib.image

    path, runs = str(toy_suite()), ["--runs-dir", str(tmp_path / "runs")]
    assert CliRunner().invoke(cli, ["run", path, *runs]).exit_code == 0
    out = CliRunner().invoke(cli, ["plot", path, *runs, "--out", str(tmp_path / "boards")])
    assert out.exit_code == 0, out.output
    image = matplotlib.image.imread(tmp_path / "boards" / "toy.png")
    assert image.shape[0] > 300 and image.shape[1] > 1000 and image.std() > 0.05  # drawn, not blank
    missing = CliRunner().invoke(cli, ["plot", path, "--runs-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no completed runs" in missing.output
