"""Progress in a terminal (live bars) and in a log (plain lines, never silent for long)."""

import io
import re
import time

from rich.console import Console

from dpbench.progress import Progress

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=200), out


def test_redirected_output_gets_a_line_per_row_and_a_status_line_while_silent():
    console, out = _console(terminal=False)
    with Progress(console, interval=0.2) as progress:
        suite = progress.add("suite demo", 1)
        for _ in progress.track(range(3), description="rounds"):
            with progress.phase("sampling"):
                time.sleep(0.5)  # one long step: the log must still move
        progress.advance(suite)
    lines = out.getvalue().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    text = [LINE.sub("", line) for line in lines]
    assert text[:3] == ["start suite demo (0/1)", "start rounds (0/3)", "start sampling"]
    assert text.count("start sampling") == 3
    assert sum(t.startswith("end sampling (0:00:00") for t in text) == 3
    assert any(t.startswith("done rounds (3/3, ") for t in text)
    assert text[-1].startswith("done suite demo (1/1, ")
    # while a phase runs silently, status lines name every open row, outermost first
    beats = [t for t in text if t.startswith("suite demo (0/1, ")]
    assert beats and all(" › rounds (" in t and t.endswith(")") and " › sampling (" in t for t in beats), text


def test_status_lines_stop_when_the_display_closes():
    console, out = _console(terminal=False)
    with Progress(console, interval=0.05) as progress:
        progress.add("suite demo", None)
        time.sleep(0.2)
    closed = out.getvalue()
    assert "suite demo (0:00:00)" in closed
    time.sleep(0.2)
    assert out.getvalue() == closed


def test_a_terminal_gets_live_bars_not_lines():
    console, out = _console(terminal=True)
    with Progress(console, interval=0.05) as progress:
        for _ in progress.track(range(2), description="rounds"):
            time.sleep(0.1)
    assert "start rounds" not in out.getvalue()
    assert "rounds" in out.getvalue()  # drawn by the live display


def test_disabled_progress_prints_nothing():
    console, out = _console(terminal=False)
    with Progress(console, enabled=False, interval=0.01) as progress:
        with progress.phase("sampling"):
            time.sleep(0.05)
    assert out.getvalue() == ""


def test_a_suite_run_shows_its_dataset_check_before_the_first_run(toy_plugin, toy_suite, tmp_path):
    """Loading and checking the datasets comes first and may take minutes (a large corpus): it
    has its row, so a log is not silent meanwhile."""
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    console, out = _console(terminal=False)
    suite = load_suite(toy_suite(), ["seeds=1", "privacy.epsilon=[1]"], runs_dir=tmp_path / "runs")
    with Progress(console, interval=60) as progress:
        assert not Runner(suite, progress=progress).run().failed
    text = [LINE.sub("", line) for line in out.getvalue().splitlines()]
    first = text.index("start loading and checking 1 dataset(s)")
    assert text[first + 1].startswith("end loading and checking 1 dataset(s) (0:00:")
    assert first < next(i for i, t in enumerate(text) if t.startswith("start suite toy"))
