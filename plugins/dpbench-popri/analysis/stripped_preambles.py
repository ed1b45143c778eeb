"""What the chat preambles cost each finished synthetic-text run downstream.

An instruct generator often opens its reply with a lead-in ("Here's a revised version of the
paragraph:") that the private texts never have. This takes the returned texts of every finished
synthetic-text run of a suite (POPri's, PE's, the synthetic-public row's), strips those preambles
with the shared post-processing's own rule (``dpbench.synthetic.prompts.strip_preamble``, what
``strip_preambles: true`` applies inside a run) and scores them again with the suite's
evaluator, beside the run's own scores. It generates nothing and spends no privacy; it
answers what stripping does to the same texts, not what a method would have learnt from
stripped texts (that needs the runs again with ``strip_preambles: true``).

    .venv/bin/python plugins/dpbench-popri/analysis/stripped_preambles.py suites/sotu-m1024.yaml \
        --runs-dir leaderboards/runs
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--runs-dir", help="as for dpbench run")
    parser.add_argument("--method", action="append", help="only this method label (repeatable; default: all)")
    parser.add_argument("--out", default=None, help="default: analysis/results/stripped_preambles_<suite>.json")
    args = parser.parse_args()

    from dpbench.api import RunContext, SyntheticTexts
    from dpbench.results import load_artifact, load_result
    from dpbench.runner import Runner
    from dpbench.suite import load_suite
    from dpbench.synthetic.prompts import CHAT_PREAMBLE, strip_preamble

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    runner = Runner(suite)
    out = Path(args.out or Path(__file__).parent / "results" / f"stripped_preambles_{suite.name}.json")
    done = {row["run"]: row for row in json.loads(out.read_text())["runs"]} if out.exists() else {}
    log = logging.getLogger("dpbench.stripped_preambles")
    rows = []
    for spec in suite.runs:
        if args.method and spec.method.label not in args.method:
            continue
        folder = suite.folder / spec.run_id
        result = load_result(folder)
        artifact = None if result is None else load_artifact(folder)
        if not isinstance(artifact, SyntheticTexts) or not artifact.texts:
            continue
        if spec.run_id in done:  # resumes: a row already scored is kept
            rows.append(done[spec.run_id])
            continue
        texts = list(artifact.texts)
        stripped = [strip_preamble(t) for t in texts]
        choice, evaluator = runner.evaluators(spec)[0]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=Path(scratch), budget=spec.budget,
                             cache=runner.cache, log=log)
            metrics = evaluator.evaluate(SyntheticTexts(texts=tuple(stripped)), runner.dataset(spec.dataset), ctx)
        own = result.metrics[choice.label]
        rows.append({"run": spec.run_id, "dataset": spec.dataset.label, "method": spec.method.label,
                     "epsilon": spec.epsilon, "seed": spec.seed, "texts": len(texts),
                     "preamble_share": round(sum(bool(CHAT_PREAMBLE.match(t)) for t in texts) / len(texts), 4),
                     "validation_accuracy": round(own["validation_accuracy"], 4),
                     "stripped_validation_accuracy": round(metrics["validation_accuracy"], 4),
                     "test_accuracy": round(own["accuracy"], 4),
                     "stripped_test_accuracy": round(metrics["accuracy"], 4),
                     "evaluation_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
        save(out, suite, args, rows)
    save(out, suite, args, rows)
    print(f"saved {out}")


def save(out: Path, suite, args, rows: list[dict]) -> None:
    """The rows and their means per (dataset, method, ε), written after every run (resumable)."""
    import numpy as np

    groups = defaultdict(list)
    for row in rows:
        groups[row["dataset"], row["method"], row["epsilon"]].append(row)
    keys = ("preamble_share", "validation_accuracy", "stripped_validation_accuracy", "test_accuracy",
            "stripped_test_accuracy")
    means = [{"dataset": d, "method": m, "epsilon": e, "runs": len(g),
              **{k: round(float(np.mean([r[k] for r in g])), 4) for k in keys}}
             for (d, m, e), g in groups.items()]
    out.write_text(json.dumps({"benchmark": "stripped_preambles", "suite": suite.name, "overrides": args.overrides,
                               "machine": platform.machine(), "means": means, "runs": rows},
                              indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
