"""Response curves of the ``next_token`` evaluator: what score does a set of known texts get?

A yardstick for synthetic text should rank sets by what they teach. This benchmark feeds the
evaluator sets whose worth is known in advance and records, for every fine-tuning run, the
validation and test accuracy at a dense schedule of checkpoints (step 0 is the pretrained
model, the ε = 0 row):

* ``public``  256 / 1,024 texts of the public split (what the pretrained model already saw:
  a set that teaches nothing about the private domain);
* ``private`` 256 / 1,024 / all private training texts (the best a synthetic set could be).

From the recorded curves it then scores selection *rules* (a learning rate, the checkpoints a
rule may pick from on validation, whether the pretrained model is one of them) and checks the
two acceptance criteria of a fair evaluator:

(a) private texts score monotonically higher with more of them (256 < 1,024 < all);
(b) public sets score within their seed interval of the ε = 0 row (they neither gain nor
    lose much: a rule that over-fits small sets fails this).

Each (set, lr, seed) run is appended to ``results/evaluator_response-<dataset>.jsonl`` as it
finishes, so an interrupted benchmark resumes where it stopped; the summary goes to
``results/evaluator_response-<dataset>.json``. The pretrained model is the evaluator's own,
from the suite's runs folder cache (built once if missing).

Run: ``.venv/bin/python benchmarks/evaluator_response.py suites/sotu.yaml [OVERRIDES] --lrs 2e-4 1e-3``
(``--checkpoints``: the steps scored; ``--seeds``: fine-tuning seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTS = (0, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 125, 150)  # dense, to compare rules
SETS = (("public", 256), ("public", 1024), ("private", 256), ("private", 1024), ("private", None))
V1_LR = 1e-3  # evaluator v1's learning rate; its failure cases are the 256-text sets


def rules(lrs: list[float], options) -> dict[str, dict]:
    """Selection rules scored from the curves: v1 as released, the evaluator's current rule
    (``options``), and per lr every recorded checkpoint with and without the pretrained model."""
    current = options.candidate_steps()
    out = {"v1 (lr 1e-3, steps 25..150, no pretrained candidate)":
           {"lr": V1_LR, "steps": tuple(range(25, 151, 25)), "pretrained": False},
           f"current (lr {options.lr:g}, steps {list(current)}, pretrained candidate)":
           {"lr": options.lr, "steps": current, "pretrained": True}}
    for lr in lrs:
        out[f"lr {lr:g}, every recorded step, no pretrained candidate"] = {"lr": lr, "steps": None, "pretrained": False}
        out[f"lr {lr:g}, every recorded step, pretrained candidate"] = {"lr": lr, "steps": None, "pretrained": True}
    return out


def finetune_curve(model_dir: Path, train_texts, validation, test, *, lr: float, seed: int, options,
                   checkpoints: tuple[int, ...]) -> list[list]:
    """Fine-tune the pretrained model on ``train_texts``; [step, val acc, test acc, loss] at ``checkpoints``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpbench.evaluation import lm

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    val_ids = lm.encode_texts(tokenizer, validation, options.max_length)
    test_ids = lm.encode_texts(tokenizer, test, options.max_length)
    encoded = lm.encode_texts(tokenizer, train_texts, options.max_length)

    def scores() -> tuple[float, float]:
        kw = {"pad_id": tokenizer.pad_token_id, "batch_size": options.eval_batch_size}
        return lm.score(model, val_ids, **kw)["accuracy"], lm.score(model, test_ids, **kw)["accuracy"]

    curve = [[0, *scores(), None]]

    def on_step(step: int, loss: float) -> None:
        if step in checkpoints:
            curve.append([step, *scores(), round(loss, 4)])

    lm.train(model, encoded, pad_id=tokenizer.pad_token_id, steps=max(checkpoints), batch_size=options.batch_size,
             lr=lr, seed=seed, schedule="constant", on_step=on_step)
    return curve


def pick(rule: dict, curve: list[list]) -> tuple[int, float, float] | None:
    """(step, validation, test) of the rule's checkpoint with the best validation accuracy (ties: earlier)."""
    allowed = [row for row in curve if (row[0] > 0 or rule["pretrained"])
               and (rule["steps"] is None or row[0] in rule["steps"])]
    if rule["steps"] is not None and len(allowed) < len(set(rule["steps"])):
        return None  # the run did not record every checkpoint the rule may pick
    best = max(allowed, key=lambda row: (row[1], -row[0]))
    return best[0], best[1], best[2]


def summarize(rows: list[dict], lrs: list[float], options) -> dict:
    from dpbench.leaderboard import summary

    base_test = rows[0]["curve"][0][2]
    report = {"epsilon0_test_accuracy": base_test, "rules": {}}
    for name, rule in rules(lrs, options).items():
        cells = {}
        for kind, size in SETS:
            label = f"{kind} {size or 'all'}"
            got = [pick(rule, r["curve"]) for r in rows
                   if r["lr"] == rule["lr"] and r["set"] == kind and r["size"] == size]
            got = [g for g in got if g is not None]
            if not got:
                continue
            stats = summary([g[2] for g in got])
            cells[label] = {"test_mean": stats["mean"], "ci95": stats["ci95"], "n": stats["n"],
                            "selected_steps": [g[0] for g in got], "test": [g[2] for g in got]}
        if not cells:
            continue
        private = [cells.get(f"private {s}") for s in (256, 1024, "all")]
        private = [c for c in private if c]
        pairs = list(zip(private, private[1:], strict=False))
        monotone = all(a["test_mean"] < b["test_mean"] for a, b in pairs) if pairs else None
        public_ok = []
        for size in (256, 1024):
            c = cells.get(f"public {size}")
            if c:
                half = c["ci95"] if c["ci95"] is not None and math.isfinite(c["ci95"]) else 0.0
                c["minus_epsilon0"] = c["test_mean"] - base_test
                public_ok.append(abs(c["test_mean"] - base_test) <= max(half, 1e-12))
        report["rules"][name] = {
            "cells": cells,
            "a_private_monotone": monotone,
            "b_public_within_ci_of_epsilon0": all(public_ok) if public_ok else None,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="suite file whose first dataset and evaluator options are used")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--v1-seeds", type=int, nargs="+", default=[0],
                        help="seeds for lr 1e-3 (v1's failure cases: 256 texts only)")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=list(CHECKPOINTS),
                        help="steps at which validation and test are scored (0: the pretrained model)")
    parser.add_argument("--out-suffix", default="", help="appended to the result files' names")
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import numpy as np

    from dpbench.api.context import RunContext
    from dpbench.api.privacy import PrivacyBudget
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    spec = suite.runs[0]
    runner = Runner(suite)
    data = runner.dataset(spec.dataset)
    (_choice, evaluator), *_ = runner.evaluators(spec)
    options = evaluator.config
    ctx = RunContext(run_id="evaluator_response", seed=0, output_dir=Path(args.runs_dir) / ".bench",
                     budget=PrivacyBudget(epsilon=0, delta=1e-5), cache=runner.cache)
    model_dir = evaluator.initial_model(data, ctx)
    private = data.training_texts()
    name = spec.dataset.label
    checkpoints = tuple(sorted(set(args.checkpoints) | {0}))
    log_path = RESULTS / f"evaluator_response-{name}{args.out_suffix}.jsonl"
    measured_on = {"data": data.fingerprint(), "model": model_dir.name, "batch_size": options.batch_size}
    done = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    done = [r for r in done if all(r.get(k) == v for k, v in measured_on.items())]
    seen = {(r["set"], r["size"], r["lr"], r["seed"]) for r in done
            if {row[0] for row in r["curve"]} >= set(checkpoints)}
    plan = [(kind, size, lr, seed) for lr in args.lrs for kind, size in SETS
            for seed in (args.v1_seeds if lr == V1_LR else args.seeds)
            if not (lr == V1_LR and size != 256)]
    pool = {"public": data.public, "private": private}
    for kind, size, lr, seed in plan:
        if (kind, size, lr, seed) in seen:
            continue
        texts = pool[kind]
        if size is not None:
            if size > len(texts):
                logging.info("skip %s %d: only %d texts", kind, size, len(texts))
                continue
            rng = np.random.default_rng([seed, 1 if kind == "public" else 2, size])
            texts = [texts[i] for i in sorted(rng.choice(len(texts), size, replace=False))]
        start = time.perf_counter()
        curve = finetune_curve(model_dir, list(texts), list(data.validation), list(data.test), lr=lr,
                               seed=seed, options=options, checkpoints=checkpoints)
        row = {"set": kind, "size": size, "texts": len(texts), "lr": lr, "seed": seed, "curve": curve,
               "seconds": round(time.perf_counter() - start, 1), **measured_on}
        logging.info("%s %s lr %g seed %d: %s", kind, size or "all", lr, seed,
                     " ".join(f"{s}:{v:.4f}/{t:.4f}" for s, v, t, _ in curve))
        with log_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        done.append(row)
    result = {"benchmark": "evaluator_response", "suite": args.suite, "dataset": name,
              "evaluator_options": {k: getattr(options, k) for k in ("vocab_size", "n_layer", "n_embd", "max_length",
                                                                      "pretrain_steps", "batch_size")},
              "public_texts": len(data.public), "private_texts": len(private),
              "validation_texts": len(data.validation), "test_texts": len(data.test),
              "checkpoints": checkpoints, **summarize(done, args.lrs, options),
              "command": "python benchmarks/evaluator_response.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    out = RESULTS / f"evaluator_response-{name}{args.out_suffix}.json"
    out.write_text(json.dumps(result, indent=1))
    for rule, r in result["rules"].items():
        print(f"{rule}: (a) {r['a_private_monotone']} (b) {r['b_public_within_ci_of_epsilon0']}")
        for label, c in r["cells"].items():
            spread = f"± {c['ci95']:.4f}" if c["n"] > 1 else "(one seed)"
            print(f"   {label:12s} {c['test_mean']:.4f} {spread} (n={c['n']}) steps {c['selected_steps']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
