"""POPri seconds per round, split into generation / scoring / DPO, from finished runs.

Every POPri round records its own wall-clock split in ``state/roundNNN/round.json`` (scoring =
candidate embedding + the clients' matrix multiply + the noisy release). This collects them
from the POPri runs of a suite as it is configured now (folders of older settings are left
out), e.g. after ``dpbench run suites/quickstart.yaml "privacy.epsilon=[1,7]"``, with each
run's round shape (N prompts × J samples, DPO steps), and prints and saves
``benchmarks/results/popri_rounds.json``.

    .venv/bin/python benchmarks/popri_rounds.py suites/quickstart.yaml "privacy.epsilon=[1,7]"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

PARTS = ("generation", "scoring", "dpo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="suites/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--runs-dir", default=None, help="where the suite's run folders are (as for dpbench run)")
    parser.add_argument("--out", default="benchmarks/results/popri_rounds.json")
    args = parser.parse_args()

    from dpbench.suite import load_suite

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    runs = []
    for folder in [suite.folder / s.run_id for s in suite.runs if s.method.plugin == "popri"]:
        rounds = [json.loads(p.read_text()) for p in sorted(folder.glob("state/round*/round.json"))]
        if not rounds:
            continue
        options = json.loads((folder / "spec.json").read_text())["method"]["options"]
        seconds = {part: [round(r["seconds"][part], 2) for r in rounds] for part in PARTS}
        runs.append({
            "run": folder.name,
            "prompts_x_samples": f"{options.get('prompts_per_round')} x {options.get('samples_per_prompt')}",
            "dpo_steps": [r["dpo"]["steps"] for r in rounds],
            "bf16": options.get("bf16"),
            "seconds": seconds,
            "mean_seconds": {part: round(float(np.mean(v)), 2) for part, v in seconds.items()},
        })
    report = {"benchmark": "popri_rounds", "suite": suite.name, "overrides": args.overrides,
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": platform.machine(), "cpus": os.cpu_count(), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for run in runs:
        print(f"{run['run']}: {run['prompts_x_samples']}, DPO steps {run['dpo_steps']}; mean seconds per round "
              + ", ".join(f"{k} {v}" for k, v in run["mean_seconds"].items()))


if __name__ == "__main__":
    main()
