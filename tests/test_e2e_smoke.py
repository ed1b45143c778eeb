"""The whole pipeline on the embedded models at smoke size: `dpbench run suites/smoke.yaml`."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_smoke_suite_end_to_end(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("DPBENCH_LOAD_PLUGINS", None)  # the methods come in through their entry points, as for users
    command = [sys.executable, "-m", "dpbench", "run", str(ROOT / "suites" / "smoke.yaml"),
               "--runs-dir", str(tmp_path / "runs"), "--leaderboards-dir", str(tmp_path / "boards")]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "8 completed, 0 already complete, 0 failed" in out.stdout
    assert "start sampling 8 texts from public prompts" in out.stdout + out.stderr  # the row's progress in a log

    board = json.loads((tmp_path / "boards" / "smoke.json").read_text())
    rows = {row["method"]: row for row in board["rows"]}
    assert set(rows) == {"public_only", "synthetic_public", "nonprivate", "popri", "pe", "dp_fedavg", "pe_sft",
                         "dp_ftrl"}
    assert rows["public_only"]["gap_closed"] == 0 and rows["nonprivate"]["gap_closed"] == 1
    for method in ("popri", "pe", "dp_fedavg", "pe_sft", "dp_ftrl"):
        assert 0 < rows[method]["epsilon_ledger"] <= 4
    for row in rows.values():
        accuracy = row["metrics"]["next_token/accuracy"]["mean"]
        assert 0 < accuracy < 1 and math.isfinite(row["metrics"]["next_token/cross_entropy"]["mean"])

    reports = {json.loads((run / "spec.json").read_text())["method"]["label"]:
               json.loads((run / "result.json").read_text())["checks"]["canaries"]
               for run in (tmp_path / "runs" / "smoke").glob("sotu__*")}
    assert reports["nonprivate"]["verbatim"] == 4 and reports["nonprivate"]["flagged"]  # the private texts themselves
    assert reports["dp_fedavg"]["verbatim"] is None and len(reports["dp_fedavg"]["ranks"]) == 4  # scored by the model
    assert not any(reports[m]["flagged"] for m in ("public_only", "popri", "pe", "dp_fedavg", "pe_sft", "dp_ftrl"))
    assert rows["nonprivate"]["leaks_canaries"] == 1

    (popri_run,) = (tmp_path / "runs" / "smoke").glob("sotu__popri__*")
    assert len(json.loads((popri_run / "samples.json").read_text())) == 8
    ledger = [json.loads(line) for line in (popri_run / "ledger.jsonl").read_text().splitlines()]
    assert [entry["key"] for entry in ledger] == ["popri-round-0"]
    (pe_run,) = (tmp_path / "runs" / "smoke").glob("sotu__pe__*")
    assert json.loads((pe_run / "artifact.json").read_text())["count"] == 8  # POPri's M
    assert {m: row["output_texts"] for m, row in rows.items() if m not in ("public_only", "nonprivate")} == {
        "synthetic_public": 8, "popri": 8, "pe": 8, "dp_fedavg": None, "pe_sft": 8, "dp_ftrl": None}
    assert "different numbers of texts" not in (tmp_path / "boards" / "smoke.md").read_text()
    assert ([json.loads(line)["key"] for line in (pe_run / "ledger.jsonl").read_text().splitlines()]
            == ["pe-iteration-0"])
    (fedavg_run,) = (tmp_path / "runs" / "smoke").glob("sotu__dp_fedavg__*")
    assert json.loads((fedavg_run / "artifact.json").read_text())["type"] == "trained_model"
    assert [json.loads(line)["key"] for line in (fedavg_run / "ledger.jsonl").read_text().splitlines()] == [
        "dp-fedavg-round-0", "dp-fedavg-round-1"]

    (sft_run,) = (tmp_path / "runs" / "smoke").glob("sotu__pe_sft__*")
    assert ([json.loads(line)["key"] for line in (sft_run / "ledger.jsonl").read_text().splitlines()]
            == ["pe-iteration-0"])  # the fine-tuning spends nothing
    assert json.loads((sft_run / "state" / "sft" / "sft.json").read_text())["texts"] == 8
    (ftrl_run,) = (tmp_path / "runs" / "smoke").glob("sotu__dp_ftrl__*")
    assert [(r["key"], r["kind"]) for r in map(json.loads, (ftrl_run / "ledger.jsonl").read_text().splitlines())] == [
        ("dp-ftrl-round-0", "tree_aggregation"), ("dp-ftrl-round-1", "tree_aggregation")]
    assert "@inproceedings{kairouz2021practical" in (tmp_path / "boards" / "smoke.md").read_text()

    (public_run,) = (tmp_path / "runs" / "smoke").glob("sotu__synthetic_public__*")
    assert json.loads((public_run / "artifact.json").read_text())["count"] == 8  # POPri's M
    assert rows["popri"]["over_synthetic_public"]["against"] == "synthetic_public"
    assert rows["pe"]["diagnostics"]["releases"] == 1 and "top_k_overlap" in rows["pe"]["diagnostics"]["agreement"]
    assert "pairs_as_noise_free" in rows["popri"]["diagnostics"]["agreement"]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert "0 completed, 8 already complete" in again.stdout
    # every run notes the pretrained evaluator it was scored against, built here
    from dpbench.cache import read_inputs, this_machine

    pretrained = {entry: machines for run in (tmp_path / "runs" / "smoke").glob("sotu__*")
                  for entry, machines in read_inputs(run).items()}
    (entry,) = pretrained
    assert entry.startswith("next_token/pretrained/") and pretrained[entry] == [this_machine("cpu")]
