"""The helpers the analysis scripts share (``analysis/finished_runs.py``), on the toy suite."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dpbench.results import load_artifact, load_result
from dpbench.runner import Runner
from dpbench.suite import load_suite


@pytest.fixture(scope="module")
def finished_runs():
    path = Path(__file__).parents[1] / "analysis" / "finished_runs.py"
    spec = importlib.util.spec_from_file_location("finished_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finished_texts_yields_only_finished_runs_that_returned_texts(finished_runs, toy_plugin, toy_suite,
                                                                      tmp_path):
    suite = load_suite(toy_suite(), ["privacy.epsilon=[1]"], runs_dir=tmp_path / "runs")
    assert list(finished_runs.finished_texts(suite)) == []
    Runner(suite).run()
    texts_runs = [s.run_id for s in suite.runs
                  if getattr(load_artifact(suite.folder / s.run_id), "texts", None)]
    yielded = list(finished_runs.finished_texts(suite))
    assert texts_runs and [spec.run_id for spec, _, _ in yielded] == texts_runs
    for spec, result, texts in yielded:
        assert result.spec["config_hash"] == load_result(suite.folder / spec.run_id).spec["config_hash"]
        assert texts == list(load_artifact(suite.folder / spec.run_id).texts)


def test_means_by_row_averages_each_method_and_epsilon_over_its_seeds(finished_runs):
    rows = [{"dataset": "d", "method": "a", "epsilon": 7.0, "seed": 0, "x": 0.1, "y": 1.0},
            {"dataset": "d", "method": "b", "epsilon": 7.0, "seed": 0, "x": 0.5, "y": 2.0},
            {"dataset": "d", "method": "a", "epsilon": 7.0, "seed": 1, "x": 0.2, "y": 3.0},
            {"dataset": "d", "method": "a", "epsilon": 1.0, "seed": 0, "x": 0.9, "y": 4.0}]
    assert finished_runs.means_by_row(rows, ("x",)) == [
        {"dataset": "d", "method": "a", "epsilon": 7.0, "runs": 2, "x": 0.15},
        {"dataset": "d", "method": "b", "epsilon": 7.0, "runs": 1, "x": 0.5},
        {"dataset": "d", "method": "a", "epsilon": 1.0, "runs": 1, "x": 0.9}]


def test_preamble_share_counts_texts_opening_with_a_chat_preamble(finished_runs):
    texts = ["Here's a revised version of the paragraph: We met.", "Here's some good news: jobs are up.",
             "Sure! Here is the rewritten text: Taxes fell.", "The Congress met."]
    assert finished_runs.preamble_share(texts) == 0.5
