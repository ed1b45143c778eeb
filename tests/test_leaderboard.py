import csv
import io
import json
import math

import pytest

from dpbench import leaderboard
from dpbench.files import read_json, write_json
from dpbench.leaderboard import IncompatibleRuns, gap_closed
from dpbench.runner import Runner
from dpbench.suite import load_suite


def test_gap_closed_arithmetic():
    assert gap_closed(0.348, 0.279, 0.415) == pytest.approx(0.5073529, rel=1e-6)  # POPri bioRxiv ε=1 (v2)
    assert gap_closed(0.279, 0.279, 0.415) == 0.0
    assert gap_closed(0.415, 0.279, 0.415) == 1.0
    assert gap_closed(4.0, 5.0, 3.0) == 0.5  # lower-is-better metrics keep the sign right
    assert gap_closed(0.3, 0.3, 0.3) is None


@pytest.fixture
def finished_suite(toy_plugin, toy_suite, tmp_path):
    suite = load_suite(toy_suite(), runs_dir=tmp_path / "runs")
    report = Runner(suite).run()
    assert not report.failed
    return suite


def test_leaderboard_rows_and_gap_closed(finished_suite):
    board = leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder), finished_suite.metric)
    rows = {(r.method, r.epsilon): r for r in board.rows}
    assert set(rows) == {("public_only", 0.0), ("nonprivate", math.inf), ("noisy_unigram", 1.0), ("noisy_unigram", 8.0)}
    assert all(r.runs == 2 for r in board.rows)
    zero = rows["public_only", 0.0].metrics["next_word/accuracy"]["mean"]
    inf = rows["nonprivate", math.inf].metrics["next_word/accuracy"]["mean"]
    dp = rows["noisy_unigram", 8.0]
    assert dp.gap_closed == pytest.approx((dp.metrics["next_word/accuracy"]["mean"] - zero) / (inf - zero))
    assert rows["public_only", 0.0].gap_closed == 0 and rows["nonprivate", math.inf].gap_closed == 1
    # ε comes from the ledgers, at or under the target
    assert 0 < rows["noisy_unigram", 1.0].epsilon_ledger <= 1.0
    assert rows["nonprivate", math.inf].epsilon_ledger == math.inf and not dp.over_budget


def test_leaderboard_files(finished_suite, tmp_path):
    board = leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder), finished_suite.metric)
    md, js, csv = leaderboard.write(board, tmp_path / "boards")
    text = md.read_text()
    assert ("| method | ε | δ | ε (ledger) | next_word/accuracy ↑ | next_word/unseen_rate ↓ | gap closed "
            "| vs best other | vs synthetic public | M | runs |" in text)
    assert "| nonprivate | ∞ |" in text and "100.0%" in text
    assert read_json(js)["metric"] == "next_word/accuracy"
    # each dataset states its clients and held-out sizes, as the runs recorded them
    (dataset, data), = read_json(js)["data"].items()
    assert data == leaderboard.collect(finished_suite.folder)[0][1].data
    assert (f"{data['clients']} training clients with {data['train_texts']} texts "
            f"({data['train_texts'] / data['clients']:.1f} per client); {data['validation_texts']} validation, "
            f"{data['test_texts']} test") in text
    assert csv.read_text().splitlines()[0].startswith(
        "dataset,method,plugin,epsilon,delta,epsilon_ledger,next_word/accuracy_mean")


def test_a_cited_method_s_paper_is_printed_under_the_board(finished_suite, tmp_path, monkeypatch):
    from dpbench.testing.toy import NoisyUnigram

    board = leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder), finished_suite.metric)
    assert board.references == {} and "## References" not in leaderboard.render_markdown(board)
    entry = "@misc{toy2026,\n  title = {A Toy Method}\n}"
    monkeypatch.setattr(NoisyUnigram, "citation", entry + "\n")
    board = leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder), finished_suite.metric)
    assert board.references == {"noisy_unigram": entry}  # the reference rows cite nothing
    md, js, _ = leaderboard.write(board, tmp_path / "boards")
    assert f"## References\n\n`noisy_unigram`:\n\n```bibtex\n{entry}\n```" in md.read_text()
    assert read_json(js)["references"] == {"noisy_unigram": entry}


def test_unequal_output_sizes_are_flagged():
    def row(method, reference, m):
        return leaderboard.Row(dataset="d", method=method, plugin=method, reference=reference, epsilon=1.0,
                               delta=1e-5, epsilon_ledger=1.0, metrics={}, gap_closed=None, runs=1, versions={},
                               output_texts=m)

    equal = [row("public_only", "epsilon_zero", 0), row("nonprivate", "epsilon_infinity", 3000),
             row("synthetic_public", "synthetic_public", 256), row("popri", None, 256), row("pe", None, 256),
             row("dp_fedavg", None, None)]
    assert leaderboard._unequal_outputs(equal) == ""
    assert leaderboard._unequal_outputs([*equal[:4], row("pe", None, 1024)]) == (
        "pe 1024, popri 256, synthetic_public 256")


def test_a_row_is_compared_with_the_synthetic_public_row_at_its_own_output_size():
    def row(method, reference, m, values, epsilon=1.0):
        return leaderboard.Row(dataset="d", method=method, plugin=method, reference=reference, epsilon=epsilon,
                               delta=1e-5, epsilon_ledger=epsilon, metrics={"e/acc": {"mean": sum(values) / 3}},
                               gap_closed=None, runs=3, versions={}, output_texts=m,
                               seed_values={str(i): v for i, v in enumerate(values)})

    rows = [row("public_only", "epsilon_zero", 0, [0.1] * 3, 0.0),
            row("synthetic_public_256", "synthetic_public", 256, [0.12, 0.13, 0.14], 0.0),
            row("synthetic_public_1024", "synthetic_public", 1024, [0.15, 0.16, 0.17], 0.0),
            row("pe_256", None, 256, [0.2] * 3), row("pe_1024", None, 1024, [0.2] * 3),
            row("dp_fedavg", None, None, [0.2] * 3)]
    leaderboard._fill_comparisons(rows, "e/acc", True)
    against = {r.method: r.over_synthetic_public["against"] for r in rows if r.over_synthetic_public}
    assert against == {"pe_256": "synthetic_public_256", "pe_1024": "synthetic_public_1024",
                       "dp_fedavg": "synthetic_public_256"}  # a model row: the first


def test_the_board_names_the_privacy_unit():
    data = {"clients": 4, "train_texts": 10, "validation_texts": 3, "test_texts": 5, "public_texts": 7,
            "privacy_unit": "one speaker"}
    line = leaderboard._describe_data(data)
    assert line == ("4 training clients with 10 texts (2.5 per client); 3 validation, 5 test and 7 public texts. "
                    "One client (the privacy unit): one speaker.")
    assert leaderboard._describe_data({}) == ""


def test_ledger_is_the_source_of_epsilon(finished_suite):
    runs = leaderboard.collect(finished_suite.folder)
    folder, result = next((f, r) for f, r in runs
                          if r.spec["method"]["label"] == "noisy_unigram" and r.spec["epsilon"] == 1.0)
    ledger = folder / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lines + lines) + "\n")  # a doubled ledger: twice the releases
    board = leaderboard.build(finished_suite.name, runs, finished_suite.metric)
    assert "repeats a key" in board.incomplete[result.run_id]
    row = next(r for r in board.rows if r.method == "noisy_unigram" and r.epsilon == 1.0)
    assert row.runs == 1  # the other seed; the damaged run is not averaged in
    assert result.run_id in leaderboard.render_markdown(board)


def test_a_run_over_its_target_is_flagged(finished_suite):
    """A ledger that is sound but spends more than the target (a changed calibration) shows ⚠."""
    runs = leaderboard.collect(finished_suite.folder)
    folder, result = next((f, r) for f, r in runs
                          if r.spec["method"]["label"] == "noisy_unigram" and r.spec["epsilon"] == 1.0)
    ledger = folder / "ledger.jsonl"
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    ledger.write_text("".join(json.dumps({**line, "noise_multiplier": line["noise_multiplier"] / 2}) + "\n"
                              for line in lines))
    result.privacy["noise_multiplier"] /= 2
    board = leaderboard.build(finished_suite.name, runs, finished_suite.metric)
    row = next(r for r in board.rows if r.method == "noisy_unigram" and r.epsilon == 1.0)
    assert row.epsilon_ledger > 1.0 and row.over_budget
    assert "⚠" in leaderboard.render_markdown(board)


def test_mixed_evaluator_versions_are_refused(finished_suite):
    runs = leaderboard.collect(finished_suite.folder)
    folder, result = runs[0]
    data = read_json(folder / "result.json")
    data["versions"]["evaluator/next_word"] = "0"
    write_json(folder / "result.json", data)
    with pytest.raises(IncompatibleRuns, match="evaluator/next_word scored runs with different versions"):
        leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder))


def test_runs_from_machines_that_differ_in_native_bf16_are_refused(finished_suite):
    runs = leaderboard.collect(finished_suite.folder)
    native = read_json(runs[0][0] / "env.json")["native_bf16_cpu"]
    leaderboard.build(finished_suite.name, runs)  # one kind of machine: one board
    env = read_json(runs[-1][0] / "env.json")
    write_json(runs[-1][0] / "env.json", {**env, "native_bf16_cpu": not native})
    with pytest.raises(IncompatibleRuns, match=f"differ in native bf16 .*{runs[-1][1].run_id}"):
        leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder))


def test_runs_scored_against_yardsticks_built_on_different_machines_are_refused(finished_suite):
    from dpbench.cache import CACHE_INPUTS, machine_label

    runs = leaderboard.collect(finished_suite.folder)
    native = read_json(runs[0][0] / "env.json")["native_bf16_cpu"]  # this machine's, as every run's
    entry = "next_token/pretrained/0123"
    for folder, _ in runs:  # every run read one pretrained model, built on machine A
        write_json(folder / CACHE_INPUTS, {entry: ["CPU A (native bf16)"]})
    assert "different machines" not in leaderboard.render_markdown(leaderboard.build(finished_suite.name, runs))
    for folder, _ in runs[::2]:  # some of them on machine B: same yardstick, still one board
        write_json(folder / "env.json", {**read_json(folder / "env.json"), "cpu": "CPU B"})
    board = leaderboard.build(finished_suite.name, runs)  # which says which machine made which runs
    on_b = sum(board.machines[machine_label("CPU B", native)].values())
    assert on_b == len(runs[::2]) and sum(map(sum, map(dict.values, board.machines.values()))) == len(runs)
    assert "Runs made on different machines" in leaderboard.render_markdown(board)
    assert json.loads(json.dumps(board.to_dict()))["machines"] == board.machines
    write_json(runs[-1][0] / CACHE_INPUTS, {entry: ["CPU B (native bf16)"]})  # one rebuilt it on B
    with pytest.raises(IncompatibleRuns, match=f"runs on 'toy_texts' were scored against {entry} built on "
                                               f"different machines .*CPU B \\(native bf16\\): 1 runs, "
                                               f"e.g. {runs[-1][1].run_id}"):
        leaderboard.build(finished_suite.name, runs)


def test_runs_made_before_the_record_count_as_built_on_their_own_machine(finished_suite):
    from dpbench.cache import CACHE_INPUTS

    runs = leaderboard.collect(finished_suite.folder)
    for folder, _ in runs:
        (folder / CACHE_INPUTS).unlink()
        write_json(folder / "env.json", {**read_json(folder / "env.json"), "cpu": "CPU A", "native_bf16_cpu": True})
    leaderboard.build(finished_suite.name, runs)  # all on A
    write_json(runs[0][0] / CACHE_INPUTS, {"next_token/pretrained/0123": ["CPU A (native bf16)"]})
    leaderboard.build(finished_suite.name, runs)  # resumed on any machine with the entry built on A
    write_json(runs[-1][0] / "env.json", {**read_json(runs[-1][0] / "env.json"), "cpu": "CPU B"})
    with pytest.raises(IncompatibleRuns, match="CPU B"):  # a pre-record run made on B
        leaderboard.build(finished_suite.name, runs)


def test_each_dataset_has_its_own_yardstick(finished_suite):
    """Rows are compared within a dataset only: one dataset's runs made on A before the record,
    another's on B scored against a model built on B, make one board."""
    from dpbench.cache import CACHE_INPUTS

    runs = leaderboard.collect(finished_suite.folder)
    for folder, _ in runs[::2]:
        (folder / CACHE_INPUTS).unlink()
        write_json(folder / "env.json", {**read_json(folder / "env.json"), "cpu": "CPU A"})
    for folder, _ in runs[1::2]:
        write_json(folder / CACHE_INPUTS, {"next_token/pretrained/b": ["CPU B (native bf16)"]})
        result = read_json(folder / "result.json")
        result["spec"]["dataset"]["label"] = "toy_b"
        write_json(folder / "result.json", result)
    board = leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder))
    assert {r.dataset for r in board.rows} == {"toy_texts", "toy_b"}


def test_only_the_current_grid_is_collected(finished_suite):
    ids = {r.run_id for r in finished_suite.runs if r.seed == 0}
    assert {r.run_id for _, r in leaderboard.collect(finished_suite.folder, ids)} == ids


TWO_PRIVATE_ROWS = """\
description: two private rows over three seeds
seeds: 3
privacy: {epsilon: [1], delta: 1e-5, accountant: rdp}
datasets:
  toy_texts: {num_clients: 30}
methods:
  public_only: {}
  nonprivate: {}
  a: {plugin: noisy_unigram, rounds: 2}
  b: {plugin: noisy_unigram, rounds: 3}
evaluators:
  next_word: {}
"""
T_975_2DOF = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (printed tables: 4.303)


def _board_with_values(toy_suite, tmp_path, values: dict[str, list[float]], body: str = TWO_PRIVATE_ROWS):
    """The board of the suite ``body`` after each run's accuracy is set to ``values[label][seed]``."""
    suite = load_suite(toy_suite(body), runs_dir=tmp_path / "runs")
    assert not Runner(suite).run().failed
    runs = leaderboard.collect(suite.folder)
    for _, result in runs:
        result.metrics["next_word"]["accuracy"] = values[result.spec["method"]["label"]][result.spec["seed"]]
    return leaderboard.build(suite.name, runs, "next_word/accuracy")


# seeds: the fewest n with t₀.₉₇₅,ₙ₋₁ · s / √n ≤ 5 % of the gap (0.0095): s = 0.0104083 needs 8
# (n = 7: 2.447 · s / √7 = 0.00963), s = 0.001 needs 2 (12.706 · s / √2 = 0.00898)
@pytest.mark.parametrize(("b", "difference", "half_width", "significant", "seeds"), [
    ([0.18, 0.22, 0.235], 0.0083333, T_975_2DOF * 0.0104083 / math.sqrt(3), False, 8),  # a−b: .020 .000 .005
    ([0.19, 0.208, 0.229], 0.0110000, T_975_2DOF * 0.0010000 / math.sqrt(3), True, 2),  # a−b: .010 .012 .011
])
def test_cells_carry_t_intervals_and_private_rows_a_paired_comparison(toy_plugin, toy_suite, tmp_path, b, difference,
                                                                       half_width, significant, seeds):
    values = {"public_only": [0.10, 0.11, 0.12], "nonprivate": [0.30, 0.31, 0.29], "a": [0.20, 0.22, 0.24], "b": b}
    board = _board_with_values(toy_suite, tmp_path, values)
    rows = {r.method: r for r in board.rows}
    a = rows["a"].metrics["next_word/accuracy"]
    assert (a["mean"], a["n"]) == (pytest.approx(0.22), 3)
    assert a["ci95"] == pytest.approx(T_975_2DOF * 0.02 / math.sqrt(3))  # s = 0.02
    assert rows["a"].seed_values == pytest.approx({"0": 0.20, "1": 0.22, "2": 0.24})
    comparison = rows["a"].comparison
    assert comparison["against"] == "b" and comparison["n"] == 3
    assert comparison["difference"] == pytest.approx(difference, abs=1e-6)
    assert comparison["ci95"] == pytest.approx(half_width, rel=1e-4)
    assert comparison["significant"] is significant
    assert comparison["ci95_of_gap"] == pytest.approx(half_width / (0.30 - 0.11), rel=1e-4)
    assert comparison["seeds_for_target"] == seeds
    assert rows["b"].comparison["against"] == "a"
    assert rows["b"].comparison["difference"] == pytest.approx(-difference, abs=1e-6)
    assert rows["public_only"].comparison is None and rows["nonprivate"].comparison is None
    # the session's notes on each release: rounds × seeds of them, none for the references
    assert (rows["a"].diagnostics["releases"], rows["b"].diagnostics["releases"]) == (6, 9)
    assert -1 <= rows["a"].diagnostics["cosine"] <= 1 and rows["a"].diagnostics["signal_to_noise"] > 0
    assert rows["public_only"].diagnostics is None and rows["nonprivate"].diagnostics is None

    text = leaderboard.render_markdown(board)
    verdict = "**significant**" if significant else "*n.s.*"
    assert f"{difference:+.4f} ± {half_width:.4f} vs b ({verdict})" in text
    assert "0.2200 ± " + f"{T_975_2DOF * 0.02 / math.sqrt(3):.4f}" in text
    assert "| a | 1 | 6 | " in text and "rank correlation" in text
    assert f"5 % would take a median of {seeds} seeds over the comparisons and {seeds} for the widest" in text
    (row,) = [r for r in csv.DictReader(io.StringIO(leaderboard.render_csv(board))) if r["method"] == "a"]
    assert row["next_word/accuracy_ci95"] == str(a["ci95"])
    assert (row["vs_best_other_significant"], row["vs_best_other_seeds_for_target"]) == (str(significant), str(seeds))


def test_the_precision_line_names_the_widest_comparisons_seeds_whatever_each_was_measured_on():
    comparisons = [{"ci95_of_gap": 0.090, "seeds_for_target": 3, "n": 2},   # wide from few seeds, small spread
                   {"ci95_of_gap": 0.075, "seeds_for_target": 4, "n": 3},
                   {"ci95_of_gap": 0.020, "seeds_for_target": 2, "n": 3}]
    line = leaderboard._precision_line(comparisons)
    assert "are 2.0–9.0 % of the ε = 0 → ∞ gap (median 7.5 %)" in line
    assert "a median of 3 seeds over the comparisons and 3 for the widest" in line and "from 2–3 seeds" in line


def test_a_row_of_one_seed_shows_no_interval_and_no_verdict(toy_plugin, toy_suite, tmp_path):
    suite = load_suite(toy_suite(TWO_PRIVATE_ROWS.replace("seeds: 3", "seeds: 1")), runs_dir=tmp_path / "runs")
    assert not Runner(suite).run().failed
    board = leaderboard.build(suite.name, leaderboard.collect(suite.folder), "next_word/accuracy")
    row = next(r for r in board.rows if r.method == "a")
    assert row.metrics["next_word/accuracy"]["ci95"] is None and row.metrics["next_word/accuracy"]["n"] == 1
    assert row.comparison["significant"] is None and row.comparison["ci95"] is None
    text = leaderboard.render_markdown(board)
    assert "(*untested*)" in text and "± 0.0000" not in text


def test_private_rows_are_compared_with_the_synthetic_public_row(toy_plugin, toy_suite, tiny_llama, tmp_path):
    body = TWO_PRIVATE_ROWS.replace("  nonprivate: {}\n", f"""  nonprivate: {{}}
  synthetic_public: {{model: {tiny_llama}, samples: 4, max_new_tokens: 4, truncate_tokens: 4}}
""")
    values = {"public_only": [0.10, 0.11, 0.12], "nonprivate": [0.30, 0.31, 0.29], "a": [0.20, 0.22, 0.24],
              "b": [0.18, 0.22, 0.235], "synthetic_public": [0.15, 0.19, 0.21]}
    board = _board_with_values(toy_suite, tmp_path, values, body)
    rows = {r.method: r for r in board.rows}
    public = rows["synthetic_public"]
    assert (public.epsilon, public.epsilon_ledger, public.reference) == (0.0, 0.0, "synthetic_public")
    assert public.gap_closed == pytest.approx((public.metrics["next_word/accuracy"]["mean"] - 0.11) / (0.30 - 0.11))
    gain = rows["a"].over_synthetic_public  # a − synthetic public: .05 .03 .03
    assert gain["against"] == "synthetic_public" and gain["n"] == 3
    assert gain["difference"] == pytest.approx(0.0366667, abs=1e-6)
    assert gain["ci95"] == pytest.approx(T_975_2DOF * 0.0115470 / math.sqrt(3), rel=1e-4)
    assert gain["significant"] is True
    assert public.over_synthetic_public is None and rows["public_only"].over_synthetic_public is None
    assert "vs synthetic_public (**significant**)" in leaderboard.render_markdown(board)


def test_committed_run_records_rebuild_and_resume_the_board(finished_suite, tmp_path):
    """What the repository's .gitignore keeps of a run folder under leaderboards/runs/ is enough to
    rebuild the board and for `dpbench run` to skip every finished run."""
    import shutil
    import subprocess
    from pathlib import Path

    from dpbench.results import monitor_history

    repo = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(repo), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout: the .gitignore rules cannot be asked")
    run = next(p for p in sorted(finished_suite.folder.iterdir()) if (p / "result.json").exists())
    (run / "state" / "round000").mkdir(parents=True)  # what a method with rounds keeps: its monitor and checkpoints
    (run / "state" / "monitor.json").write_text(json.dumps({"history": [{"validation": 0.1}, {"validation": 0.2}]}))
    (run / "state" / "round000" / "adapter.safetensors").write_bytes(b"weights")
    files = {f"leaderboards/runs/{finished_suite.name}/{path.relative_to(finished_suite.folder).as_posix()}": path
             for path in finished_suite.folder.rglob("*") if path.is_file()}
    ignored = set(subprocess.run(["git", "-C", str(repo), "check-ignore", "--no-index", "--stdin"],
                                 input="\n".join(files), capture_output=True, text=True).stdout.split())
    kept = {name: path for name, path in files.items() if name not in ignored}
    assert any(name.endswith("/releases/" + path.name) for name, path in kept.items())  # stored releases kept
    assert not any("/.locks/" in name for name in kept)
    assert not any(name.endswith("adapter.safetensors") for name in kept)  # checkpoints stay out
    copy = tmp_path / "committed"
    for path in kept.values():
        target = copy / finished_suite.name / path.relative_to(finished_suite.folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)

    resumed = load_suite(finished_suite.path, runs_dir=copy)
    rebuilt = leaderboard.build(resumed.name, leaderboard.collect(resumed.folder), resumed.metric)
    original = leaderboard.build(finished_suite.name, leaderboard.collect(finished_suite.folder), finished_suite.metric)
    assert not rebuilt.incomplete and rebuilt.rows == original.rows
    assert monitor_history(copy / finished_suite.name / run.name) == monitor_history(run) != []  # the page's curves
    report = Runner(resumed).run()
    assert not report.completed and len(report.skipped) == len(resumed.runs)


def test_holm_rejects_step_down_and_skips_untested_members():
    # sorted 0.005 ≤ .05/4, 0.01 ≤ .05/3, then 0.03 > .05/2 stops: 0.04 is not rejected either
    assert leaderboard.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert leaderboard.holm([0.02, None, 0.04]) == [True, None, True]  # a family of two: .02 ≤ .025, .04 ≤ .05
    assert leaderboard.holm([0.02, 0.04, 0.9]) == [False, False, False]  # .02 > .05/3 stops at once
    assert leaderboard.holm([]) == []
    assert leaderboard.holm([0.05]) == [False]  # strict, as the unadjusted verdict: p < 0.05


def test_a_pair_s_p_value_is_exact_when_every_seed_differs_by_the_same_amount():
    same = leaderboard.paired_difference({"0": 0.2, "1": 0.3}, {"0": 0.2, "1": 0.3})
    assert (same["p_value"], same["significant"]) == (1.0, False)
    shifted = leaderboard.paired_difference({"0": 0.25, "1": 0.35, "2": 0.45}, {"0": 0.2, "1": 0.3, "2": 0.4})
    assert (shifted["p_value"], shifted["significant"]) == (0.0, True)
    assert leaderboard.paired_difference({"0": 0.2}, {"0": 0.1})["p_value"] is None  # one seed tests nothing


def _row(method, values, *, epsilon=1.0, reference=None, dataset="d", noise="seeded"):
    values = dict(enumerate(values)) if isinstance(values, list) else values
    mean = sum(values.values()) / len(values)
    return leaderboard.Row(dataset=dataset, method=method, plugin=method, reference=reference, epsilon=epsilon,
                           delta=1e-5, epsilon_ledger=epsilon, metrics={"e/acc": {"mean": mean}}, gap_closed=None,
                           runs=len(values), versions={}, noise=noise,
                           seed_values={str(seed): v for seed, v in values.items()})


def test_a_pair_is_ordered_by_the_seeds_both_ran_and_each_noise_mode_is_its_own_family():
    # a's mean is higher only through the seed b has not run yet; on seeds 0 and 1 b is ahead
    rows = [_row("a", {0: 0.5, 1: 0.5, 2: 0.9}), _row("b", {0: 0.6, 1: 0.7}), _row("c", {5: 0.1}),
            _row("a", [0.2, 0.3], noise="secure"), _row("b", [0.1, 0.25], noise="secure")]
    pairs = {(p["noise"], p["ahead"], p["behind"]): p for p in leaderboard.pairwise(rows, "e/acc", higher=True)}
    assert set(pairs) == {("seeded", "b", "a"), ("seeded", "a", "c"), ("seeded", "b", "c"), ("secure", "a", "b")}
    assert pairs["seeded", "b", "a"]["difference"] == pytest.approx(0.15) and pairs["seeded", "b", "a"]["n"] == 2
    assert pairs["seeded", "a", "c"]["n"] == 0 and pairs["seeded", "a", "c"]["significant_holm"] is None  # by mean
    secure = leaderboard._pairs_table([pairs["secure", "a", "b"]])
    assert any(line.startswith("| 1 (secure noise) | a | b | +0.0750 ± ") for line in secure)


def test_every_pair_of_private_rows_at_an_epsilon_is_compared_better_mean_first():
    from scipy.stats import ttest_rel

    a, b, c = [0.20, 0.22, 0.24], [0.19, 0.208, 0.229], [0.10, 0.30, 0.20]
    rows = [_row("b", b), _row("c", c), _row("a", a), _row("a", [0.5] * 3, epsilon=7.0),
            _row("synthetic_public", [0.3] * 3, epsilon=0.0, reference="synthetic_public"),
            _row("x", [0.2] * 3, dataset="other")]
    pairs = leaderboard.pairwise(rows, "e/acc", higher=True)
    assert [(p["dataset"], p["epsilon"], p["ahead"], p["behind"]) for p in pairs] == [
        ("d", 1.0, "a", "b"), ("d", 1.0, "a", "c"), ("d", 1.0, "b", "c")]  # means .22, .209, .2
    for p in pairs:
        ahead, behind = {"a": a, "b": b, "c": c}[p["ahead"]], {"a": a, "b": b, "c": c}[p["behind"]]
        assert p["difference"] == pytest.approx(sum(ahead) / 3 - sum(behind) / 3) and p["n"] == 3
        assert p["p_value"] == pytest.approx(ttest_rel(ahead, behind).pvalue)
        assert p["significant"] is (p["p_value"] < 0.05)  # the interval and the test agree
    # a − b (.010 .012 .011) is significant alone and stays so among three: p ≈ .0026 ≤ .05/3
    assert [(p["significant"], p["significant_holm"]) for p in pairs] == [(True, True), (False, False),
                                                                          (False, False)]
    lower_better = leaderboard.pairwise(rows[:3], "e/acc", higher=False)
    assert [(p["ahead"], p["behind"]) for p in lower_better] == [("c", "b"), ("c", "a"), ("b", "a")]
    assert lower_better[0]["difference"] == pytest.approx(-pairs[2]["difference"])


def test_the_pairs_are_on_the_board_files_and_one_seed_leaves_them_untested(toy_plugin, toy_suite, tmp_path):
    values = {"public_only": [0.10, 0.11, 0.12], "nonprivate": [0.30, 0.31, 0.29], "a": [0.20, 0.22, 0.24],
              "b": [0.19, 0.208, 0.229]}
    board = _board_with_values(toy_suite, tmp_path, values)
    (pair,) = board.pairs
    assert (pair["ahead"], pair["behind"], pair["significant"], pair["significant_holm"]) == ("a", "b", True, True)
    md, js, _ = leaderboard.write(board, tmp_path / "boards")
    assert read_json(js)["pairs"] == [pair]
    assert (f"| 1 | a | b | +0.0110 ± {T_975_2DOF * 0.001 / math.sqrt(3):.4f} | **significant** | "
            f"{pair['p_value']:.3g} | **significant** |") in md.read_text()

    suite = load_suite(toy_suite(TWO_PRIVATE_ROWS.replace("seeds: 3", "seeds: 1")), runs_dir=tmp_path / "one")
    assert not Runner(suite).run().failed
    one = leaderboard.build(suite.name, leaderboard.collect(suite.folder), "next_word/accuracy")
    (pair,) = one.pairs
    assert (pair["n"], pair["ci95"], pair["p_value"], pair["significant"], pair["significant_holm"]) == (
        1, None, None, None, None)
    assert "| *untested* | – | *untested* |" in leaderboard.render_markdown(one)


def test_an_epsilons_comparisons_with_synthetic_public_are_corrected_together_and_the_cell_says_when_holm_differs():
    public = [0.30, 0.31, 0.32]
    gains = {"a": [0.010, 0.012, 0.011],   # p ≈ .003: significant alone and under Holm (≤ .05/3)
             "c": [0.010, 0.020, 0.016],   # p ≈ .03: significant alone, not under Holm (> .05/2)
             "b": [0.020, 0.010, 0.030]}   # p ≈ .07: not significant
    rows = [_row("synthetic_public", public, epsilon=0.0, reference="synthetic_public"),
            *[_row(m, [p + g for p, g in zip(public, gain, strict=True)]) for m, gain in gains.items()],
            _row("a", [0.5, 0.6, 0.7], epsilon=7.0)]  # another ε: its own family of one
    leaderboard._fill_comparisons(rows, "e/acc", higher=True)
    pairs = leaderboard.pairwise(rows, "e/acc", higher=True)
    leaderboard._fill_holm_verdicts(rows, pairs)
    versus = {(r.method, r.epsilon): r.over_synthetic_public for r in rows if r.over_synthetic_public}
    assert {k: (v["significant"], v["significant_holm"]) for k, v in versus.items()} == {
        ("a", 1.0): (True, True), ("c", 1.0): (True, False), ("b", 1.0): (False, False), ("a", 7.0): (True, True)}
    assert leaderboard._fmt_comparison(versus["c", 1.0]).endswith("(**significant**, *n.s.* under Holm)")
    assert leaderboard._fmt_comparison(versus["a", 1.0]).endswith("(**significant**)")
    for row in rows[1:4]:  # the best other row's comparison carries its pair's verdict
        pair = next(p for p in pairs if {p["ahead"], p["behind"]} == {row.method, row.comparison["against"]})
        assert row.comparison["significant_holm"] is pair["significant_holm"]


def test_a_claimed_ordering_is_judged_pair_by_pair_by_the_holm_verdicts():
    from dpbench.suite import Claim

    rows = [_row("a", [0.30, 0.31, 0.32]), _row("b", [0.20, 0.205, 0.21]), _row("c", [0.21, 0.19, 0.23]),
            _row("d", [0.205, 0.195, 0.22])]
    pairs = leaderboard.pairwise(rows, "e/acc", higher=True)
    claims = [Claim(epsilon=1.0, order=(("b",), ("a",), ("c", "d")), source="a paper, table 2"),
              Claim(epsilon=7.0, order=(("a",), ("b",)), source="the same paper at ε = 7")]
    judged = leaderboard.check_claims(pairs, claims, datasets=["d"])
    verdicts = {(c["epsilon"], c["ahead"], c["behind"]): c["verdict"] for c in judged}
    assert verdicts == {(1.0, "b", "a"): "reversed",        # a is significantly ahead, even after Holm
                        (1.0, "b", "c"): "not reproduced",  # within the seeds' noise
                        (1.0, "b", "d"): "not reproduced",
                        (1.0, "a", "c"): "reproduced", (1.0, "a", "d"): "reproduced",
                        (7.0, "a", "b"): "untested"}        # no rows at ε = 7 (and no claim inside the tie c, d)
    reversed_ = next(c for c in judged if (c["ahead"], c["behind"]) == ("b", "a"))
    assert reversed_["difference"] == pytest.approx(-0.105)  # as claimed: b − a
    text = "\n".join(leaderboard._claims_table([c for c in judged if c["epsilon"] == 1.0]))
    assert "2 reproduced, 1 reversed, 2 not reproduced of 5." in text and "- ε = 1: a paper, table 2" in text
    assert "| 1 | b > a | -0.1050 ± " in text and "| **reversed** |" in text
