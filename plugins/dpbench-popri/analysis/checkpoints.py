"""Downstream validation accuracy of every checkpoint of a finished POPri run.

POPri returns the final texts of one checkpoint, chosen by its ``select`` rule from embedding
statistics on the validation split. This regenerates the final texts of every checkpoint
(same prompts and seeds as the run; the run's own checkpoint reuses its saved texts) and
scores each with the suite's evaluator, so a selection rule, more rounds or more final texts
(``--final-samples``) can be judged by the downstream metric itself. It spends no privacy
(the adapters are released already) and reports validation accuracy only: the test split
stays for the leaderboard.

    .venv/bin/python plugins/dpbench-popri/analysis/checkpoints.py suites/shared-biorxiv.yaml \
        --runs-dir leaderboards/runs --epsilon 1 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
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
    parser.add_argument("--epsilon", type=float, required=True, help="which POPri run of the suite")
    parser.add_argument("--seed", type=int, help="which seed's run (default: the suite's first)")
    parser.add_argument("--method", default="popri", help="the run's method label in the suite")
    parser.add_argument("--checkpoints", type=int, nargs="+", help="only these (default: all)")
    parser.add_argument("--final-samples", type=int, help="texts per checkpoint (default: the run's final_samples)")
    parser.add_argument("--out", default=None,
                        help="default: analysis/results/checkpoints_<suite>_eps<ε>[_seed<s>].json")
    args = parser.parse_args()

    from dpbench.api import RunContext, SyntheticTexts
    from dpbench.errors import DpbenchError
    from dpbench.results import load_result
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    runs = [s for s in suite.runs if s.method.label == args.method and s.epsilon == args.epsilon
            and args.seed in (None, s.seed)]
    if not runs:
        raise DpbenchError(f"suite {suite.name!r} has no {args.method!r} run at ε = {args.epsilon:g}"
                           + ("" if args.seed is None else f", seed {args.seed}"))
    spec, runner = runs[0], Runner(suite)
    folder = suite.folder / spec.run_id
    if load_result(folder) is None:
        raise DpbenchError(f"{folder} is not a finished run: run `dpbench run {args.suite}` first")
    monitor = json.loads((folder / "state" / "monitor.json").read_text())
    method, data = runner.method(spec), runner.dataset(spec.dataset)
    method_data = data.for_method()
    own_texts = args.final_samples in (None, method.config.final_samples)
    if not own_texts:
        method = type(method)(dataclasses.replace(method.config, final_samples=args.final_samples))
    choice, evaluator = runner.evaluators(spec)[0]
    log = logging.getLogger("dpbench.checkpoints")

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for stats in monitor["history"]:
            k = stats["checkpoint"]
            if args.checkpoints and k not in args.checkpoints:
                continue
            ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=Path(scratch) / f"ckpt{k}",
                             budget=spec.budget, cache=runner.cache, log=log)
            start = time.perf_counter()
            saved = (folder / "state" / "final" / "synthetic.json" if own_texts and k == monitor["chosen_checkpoint"]
                     else Path(scratch) / f"texts{k}.json")
            texts = method.checkpoint_texts(method_data, ctx, state=folder / "state", checkpoint=k, saved=saved)
            generated = time.perf_counter()
            metrics = evaluator.evaluate(SyntheticTexts(texts=tuple(texts)), data, ctx)
            details = json.loads((ctx.output_dir / "next_token.json").read_text())
            rows.append({"checkpoint": k, "chosen_by_run": k == monitor["chosen_checkpoint"], "texts": len(texts),
                         "validation_accuracy": round(metrics["validation_accuracy"], 4),
                         "selected_step": details.get("selected_step"),
                         "validation_curve": [point[:2] for point in details.get("curve", [])],
                         "monitor": {key: round(v, 4) for key, v in stats.items() if key != "checkpoint"},
                         "generation_s": round(generated - start, 1),
                         "evaluation_s": round(time.perf_counter() - generated, 1)})
            print(f"checkpoint {k}{' (run)' if rows[-1]['chosen_by_run'] else ''}: validation accuracy "
                  f"{rows[-1]['validation_accuracy']:.4f} (step {rows[-1]['selected_step']}), centroid cosine "
                  f"{stats['validation_centroid_cosine']:.3f}, diversity {stats['mean_pairwise_cosine']:.3f}",
                  flush=True)
    result = {"benchmark": "popri_checkpoints", "suite": suite.name, "overrides": args.overrides, "run": spec.run_id,
              "seed": spec.seed,
              "select": monitor["rule"], "evaluator": {choice.plugin: choice.options}, "machine": platform.machine(),
              "rows": rows}
    size = f"_m{args.final_samples}" if args.final_samples else ""
    seed = "" if args.seed is None else f"_seed{args.seed}"
    results = Path("plugins/dpbench-popri/analysis/results")
    out = Path(args.out or results / f"checkpoints_{suite.name}_eps{args.epsilon:g}{seed}{size}.json")
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
