"""What a synthetic set of M texts can reach under a suite's evaluator, before any DP method.

The evaluator fine-tunes for a fixed budget of sequences whatever the set size, so a small set
is seen for many epochs. This scores, with the suite's own dataset, evaluator and suite cache
(the pretrained model is shared with ``dpbench run``), sets that bound what a method of
output size M can hope for: M real private training texts (the ε = ∞ ceiling at that size)
and M public texts (fine-tuning on text that carries no private signal), for each M in
``--sizes``. Prints and saves validation and test accuracy, the selected step and the
validation curve of each, beside the no-fine-tuning ε = 0 model.

    .venv/bin/python scripts/evaluator_ceiling.py suites/quickstart.yaml --sizes 256 1024
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--seed", type=int, default=0, help="subsets and fine-tuning seed")
    parser.add_argument("--out", default="scripts/results/evaluator_ceiling.json")
    args = parser.parse_args()

    from dpbench.api import RunContext, SyntheticTexts
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    suite = load_suite(args.suite, args.overrides)
    spec, runner = suite.runs[0], Runner(suite)
    data, cache = runner.dataset(spec.dataset), runner.cache
    choice, evaluator = runner.evaluators(spec)[0]

    private, public = data.training_texts(), tuple(data.public)
    rng = np.random.default_rng(args.seed)

    def subset(texts: tuple[str, ...], m: int) -> tuple[str, ...]:
        return tuple(texts[i] for i in sorted(rng.choice(len(texts), min(m, len(texts)), replace=False)))

    sets = {"no fine-tuning (ε = 0)": ()}
    for m in args.sizes:
        sets[f"private {min(m, len(private))}"] = subset(private, m)
        sets[f"public {min(m, len(public))}"] = subset(public, m)
    sets[f"private all ({len(private)}, ε = ∞)"] = private

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, texts in sets.items():
            out = Path(scratch) / str(len(rows))
            ctx = RunContext(run_id=f"ceiling-{len(rows)}", seed=args.seed, output_dir=out, budget=spec.budget,
                             cache=cache, log=logging.getLogger("dpbench.ceiling"))
            start = time.perf_counter()
            metrics = evaluator.evaluate(SyntheticTexts(texts=texts), data, ctx)
            details = json.loads((out / "next_token.json").read_text())
            rows.append({"set": label, "texts": len(texts), "test_accuracy": round(metrics["accuracy"], 4),
                         "validation_accuracy": round(metrics["validation_accuracy"], 4),
                         "selected_step": details.get("selected_step"), "curve": details.get("curve"),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(f"{label:32s} val {metrics['validation_accuracy']:.4f}  test {metrics['accuracy']:.4f}  "
                  f"step {details.get('selected_step')}  ({rows[-1]['seconds']} s)", flush=True)
    result = {"benchmark": "evaluator_ceiling", "suite": suite.name, "overrides": args.overrides,
              "evaluator": {choice.plugin: choice.options}, "seed": args.seed, "machine": platform.machine(),
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
