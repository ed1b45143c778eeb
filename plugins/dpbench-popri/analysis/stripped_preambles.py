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
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--runs-dir", help="as for dpbench run")
    parser.add_argument("--method", action="append",
                        help="score only this method's runs (repeatable; default: all); saved rows are kept")
    parser.add_argument("--out", default=None, help="default: analysis/results/stripped_preambles_<suite>.json")
    args = parser.parse_args()

    from finished_runs import finished_texts, preamble_share

    from dpbench.api import RunContext, SyntheticTexts
    from dpbench.runner import Runner
    from dpbench.suite import load_suite
    from dpbench.synthetic.prompts import strip_preamble

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    runner = Runner(suite)
    out = Path(args.out or Path(__file__).parent / "results" / f"stripped_preambles_{suite.name}.json")
    done = {row["run"]: row for row in json.loads(out.read_text())["runs"]} if out.exists() else {}
    log = logging.getLogger("dpbench.stripped_preambles")
    rows = []
    for spec, result, texts in finished_texts(suite):
        if spec.run_id in done:  # resumes: a row already scored is kept, whichever --method
            rows.append(done[spec.run_id])
            continue
        if args.method and spec.method.label not in args.method:
            continue
        choice, evaluator = runner.evaluators(spec)[0]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=Path(scratch), budget=spec.budget,
                             cache=runner.cache, log=log)
            stripped = SyntheticTexts(texts=tuple(strip_preamble(t) for t in texts))
            metrics = evaluator.evaluate(stripped, runner.dataset(spec.dataset), ctx)
        own = result.metrics[choice.label]
        rows.append({"run": spec.run_id, "dataset": spec.dataset.label, "method": spec.method.label,
                     "epsilon": spec.epsilon, "seed": spec.seed, "texts": len(texts),
                     "preamble_share": round(preamble_share(texts), 4),
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
    from finished_runs import means_by_row

    keys = ("preamble_share", "validation_accuracy", "stripped_validation_accuracy", "test_accuracy",
            "stripped_test_accuracy")
    out.write_text(json.dumps({"benchmark": "stripped_preambles", "suite": suite.name, "overrides": args.overrides,
                               "machine": platform.machine(), "means": means_by_row(rows, keys), "runs": rows},
                              indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
