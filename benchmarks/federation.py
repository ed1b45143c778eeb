"""POPri, PE and DP-FedAvg of the smoke suite with their client steps in process and on Flower's
simulation engine, side by side in one run: method time, and whether the ledgers are the same.

Four grids, each from an empty runs folder, one after the other: ``runtime: inprocess`` and
``runtime: flower``, each with the methods' default client batching (POPri's and PE's
in-process steps score many clients in one matrix product) and with one client per step
(``score_batch_clients: 1``, ``vote_batch_clients: 1``: the arithmetic a Flower node does).
Per method: ``method_s`` from each run's record, the ratio flower / inprocess, whether the
ledgers (timestamps aside) are identical, and the largest absolute difference between the two
runtimes' stored releases (the privacy-relevant output). DP-FedAvg's step is per client in
both runtimes.

``.venv/bin/python benchmarks/federation.py`` writes ``results/federation.json``. Nothing else
may run meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dpbench.testing.runs import ledger_lines

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE = ROOT / "suites" / "smoke.yaml"
METHODS = ("popri", "pe", "dp_fedavg")
ONLY = [f"~methods.{m}" for m in ("public_only", "synthetic_public", "nonprivate", "pe_sft", "dp_ftrl")]
PER_CLIENT = ["methods.popri.score_batch_clients=1", "methods.pe.vote_batch_clients=1"]
GRIDS = {"inprocess": [], "flower": ["+runtime=flower"],
         "inprocess, one client per step": PER_CLIENT, "flower, one client per step": [*PER_CLIENT, "+runtime=flower"]}


def run(runs_dir: Path, overrides: list[str]) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dpbench", "run", str(SUITE), "--runs-dir", str(runs_dir), *ONLY,
                          *overrides], env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{overrides} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def method_folders(runs_dir: Path) -> dict[str, Path]:
    folders = {m: list((runs_dir / "smoke").glob(f"sotu__{m}__eps*")) for m in METHODS}
    if any(len(found) != 1 for found in folders.values()):
        raise SystemExit(f"expected one run per method: {folders}")
    return {m: found[0] for m, found in folders.items()}


def release_difference(a: Path, b: Path) -> float | None:
    """The largest |difference| between two runs' stored releases (``None`` if discarded)."""
    pairs = [(a / x["file"], b / y["file"]) for x, y in zip(ledger_lines(a), ledger_lines(b), strict=True)]
    if not all(p.exists() and q.exists() for p, q in pairs):
        return None
    return max(float(np.abs(np.load(p) - np.load(q)).max()) for p, q in pairs)


def compare(local: dict[str, Path], flower: dict[str, Path]) -> dict:
    out = {}
    for m in METHODS:
        local_s = json.loads((local[m] / "result.json").read_text())["timings"]["method_s"]
        flower_s = json.loads((flower[m] / "result.json").read_text())["timings"]["method_s"]
        out[m] = {"method_s": {"inprocess": round(local_s, 2), "flower": round(flower_s, 2)},
                  "ratio": round(flower_s / local_s, 2),
                  "same_ledger": ledger_lines(local[m]) == ledger_lines(flower[m]),
                  "largest_release_difference": release_difference(local[m], flower[m])}
    return out


def main() -> None:
    seconds, folders = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in GRIDS.items():
            runs_dir = Path(tmp) / name.replace(" ", "_").replace(",", "")
            seconds[name] = round(run(runs_dir, overrides), 1)
            folders[name] = method_folders(runs_dir)
            print(f"{name}: {seconds[name]:.1f} s", flush=True)
        record = {
            "suite": "suites/smoke.yaml", "methods": list(METHODS), "cpus": os.cpu_count(),
            "grid_seconds": seconds,
            "default_batching": compare(folders["inprocess"], folders["flower"]),
            "one_client_per_step": compare(folders["inprocess, one client per step"],
                                           folders["flower, one client per step"]),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "federation.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
