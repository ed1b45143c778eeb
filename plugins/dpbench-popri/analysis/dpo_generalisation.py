"""Whether DPO on POPri's preference pairs learns what carries to new prompts, by pairs and learning rate.

POPri's runs check each round, before it trains, the policy's DPO loss on the round's fresh
pairs; at the CPU setting (32 pairs a round, lr 5e-4) it stays near ln 2 even without noise
(docs/notes/popri-cpu-tuning.md). This asks what would move it, offline: from the pairs that
finished POPri runs released (``round_pairs``; no privacy is spent again; a pair that runs of
one seed share, as its runs at several ε do in round 0, counts once) it trains a fresh adapter
for one epoch on N pairs of some runs, at each learning rate, with the suite's POPri options
otherwise (β, LoRA, pairs per step), and scores the DPO loss and reward accuracy on the pairs of
the runs of another seed (prompts that are new combinations of the same public examples) with
``held_out_check``, the runs' own check. A policy equal to the reference scores ln 2; chance
accuracy is 0.5, and ``chosen_longer`` (the share of held-out pairs whose chosen completion has
more words, ties counting half) is what a preference for length alone would score. The pairs
come from several rounds, so for N > 32 they are off-policy, like a replay buffer.

One fold holds out one seed's runs; ``--held-out-seed`` with several seeds makes several folds,
and ``--repeats`` trains each setting again on another random subset with another training
seed. Each setting's summary is the mean over its folds × repeats with a 95 % t half-width: the
folds share training pairs, so the half-width is a spread to compare settings by, not an
independent-sample interval.

    .venv/bin/python plugins/dpbench-popri/analysis/dpo_generalisation.py suites/shared-biorxiv.yaml \\
        --runs-dir leaderboards/runs --epsilon inf 7 --held-out-seed 0 1 2 --repeats 2 \\
        --pairs 32 256 --learning-rate 5e-4 5e-5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--runs-dir", help="as for dpbench run")
    parser.add_argument("--epsilon", type=float, nargs="+", required=True, help="the POPri runs whose pairs are used")
    parser.add_argument("--method", default="popri", help="the runs' method label in the suite")
    parser.add_argument("--held-out-seed", type=int, nargs="+", default=None,
                        help="one fold per seed given, holding out that seed's runs (default: the suite's last seed)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="trainings per fold and setting, each on its own random subset and training seed")
    parser.add_argument("--pairs", type=int, nargs="+", required=True, help="training pool sizes N")
    parser.add_argument("--learning-rate", type=float, nargs="+", required=True)
    parser.add_argument("--out", default=None,
                        help="default: plugins/dpbench-popri/analysis/results/dpo_generalisation_<suite>.json")
    args = parser.parse_args()

    from dpbench.api import RunContext
    from dpbench.cache import this_machine
    from dpbench.errors import DpbenchError
    from dpbench.leaderboard import summary
    from dpbench.results import load_result
    from dpbench.runner import Runner
    from dpbench.suite import load_suite
    from dpbench.toolkit import load_causal_lm, load_tokenizer
    from dpbench_popri.dpo import held_out_check, train_round

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    runs = [s for s in suite.runs if s.method.label == args.method and s.epsilon in args.epsilon
            and load_result(suite.folder / s.run_id) is not None]
    held_seeds = list(dict.fromkeys(args.held_out_seed or [max(s.seed for s in suite.runs)]))
    folds = {seed: ([s for s in runs if s.seed != seed], [s for s in runs if s.seed == seed]) for seed in held_seeds}
    for seed, (train_runs, held_runs) in folds.items():
        if not train_runs or not held_runs:
            raise DpbenchError(f"need finished {args.method!r} runs at ε in {args.epsilon} of seed {seed} and of "
                               f"other seeds in {suite.folder}")
    if args.repeats < 1:
        raise DpbenchError(f"--repeats {args.repeats}: must be at least 1")

    runner = Runner(suite)
    data = runner.dataset(runs[0].dataset).for_method()

    def pairs_of(specs) -> list[dict]:
        """The distinct pairs of ``specs``' rounds, in run and round order."""
        pairs = {}
        for spec in specs:
            method = runner.method(spec)
            ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=suite.folder / spec.run_id,
                             budget=spec.budget, cache=runner.cache)  # only its seed streams are used
            for r in range(method.config.rounds):
                for pair in method.round_pairs(data, ctx, state=suite.folder / spec.run_id / "state", round_index=r):
                    pairs.setdefault(json.dumps(pair, sort_keys=True), pair)
        return list(pairs.values())

    def words(completion) -> int:
        return len(str(completion[-1]["content"] if isinstance(completion, list) else completion).split())

    options = runner.method(runs[0]).config
    tokenizer = load_tokenizer(options.model)
    pairs = {seed: (pairs_of(train_runs), pairs_of(held_runs)) for seed, (train_runs, held_runs) in folds.items()}
    for seed, (pool, _) in pairs.items():  # before any training: a short pool would stop the script hours in
        if max(args.pairs) > len(pool):
            raise DpbenchError(f"--pairs {max(args.pairs)}: the runs of fold {seed} hold {len(pool)} training pairs")
    rows, fold_records = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for held_seed, (train_runs, held_runs) in folds.items():
            pool, held = pairs[held_seed]
            chosen_longer = sum((words(p["chosen"]) > words(p["rejected"]))
                                + (words(p["chosen"]) == words(p["rejected"])) / 2 for p in held) / len(held)
            fold_records.append({"held_out_seed": held_seed, "train_runs": [s.run_id for s in train_runs],
                                 "held_out_runs": [s.run_id for s in held_runs], "training_pairs": len(pool),
                                 "training_prompts": len({json.dumps(p["prompt"]) for p in pool}),
                                 "held_out_pairs": len(held),
                                 "held_out_prompts": len({json.dumps(p["prompt"]) for p in held}),
                                 "chosen_longer": chosen_longer})
            for repeat in range(args.repeats):
                subset = random.Random(repeat).sample(pool, len(pool))  # rounds and seeds mixed in every prefix
                for n in args.pairs:
                    for lr in args.learning_rate:
                        folder = Path(scratch) / f"fold{held_seed}-repeat{repeat}-n{n}-lr{lr:g}"
                        setting = dataclasses.replace(options, learning_rate=lr)
                        start = time.perf_counter()
                        base = load_causal_lm(options.model, dtype="float32")
                        trained = train_round(options=setting, base_model=base, tokenizer=tokenizer, pairs=subset[:n],
                                              previous=None, out_dir=folder, seed=repeat, device="cpu")
                        trained_s = time.perf_counter() - start
                        check = held_out_check(options=setting,
                                               base_model=load_causal_lm(options.model, dtype="float32"),
                                               tokenizer=tokenizer, pairs=held, trained=folder,
                                               out_dir=folder / "check", device="cpu")
                        check_s = time.perf_counter() - start - trained_s
                        rows.append({"held_out_seed": held_seed, "repeat": repeat, "pairs": n, "learning_rate": lr,
                                     "steps": trained["steps"], "train_loss_last": trained["loss_last"], **check,
                                     "train_s": round(trained_s, 1), "check_s": round(check_s, 1)})
                        print(f"fold {held_seed}, repeat {repeat}, N {n}, lr {lr:g}: held-out loss "
                              f"{check['held_out_loss']:.4f} (ln 2 = {math.log(2):.4f}), reward accuracy "
                              f"{check['held_out_reward_accuracy']:.3f} (length alone {chosen_longer:.3f}); "
                              f"{trained_s:.0f} s", flush=True)
    settings = []
    for n in args.pairs:
        for lr in args.learning_rate:
            mine = [r for r in rows if r["pairs"] == n and r["learning_rate"] == lr]
            settings.append({"pairs": n, "learning_rate": lr,
                             "held_out_loss": summary([r["held_out_loss"] for r in mine]),
                             "held_out_reward_accuracy": summary([r["held_out_reward_accuracy"] for r in mine])})
    for row in settings:
        loss, accuracy = row["held_out_loss"], row["held_out_reward_accuracy"]
        spread = (f"± {loss['ci95']:.4f}", f"± {accuracy['ci95']:.3f}") if loss["n"] > 1 else ("", "")
        print(f"N {row['pairs']}, lr {row['learning_rate']:g}: held-out loss {loss['mean']:.4f} {spread[0]}, "
              f"reward accuracy {accuracy['mean']:.3f} {spread[1]} (n = {loss['n']}"
              f"{'' if loss['n'] > 1 else ': no interval'})")
    result = {"benchmark": "popri_dpo_generalisation", "suite": suite.name, "overrides": args.overrides,
              "epsilon": args.epsilon, "repeats": args.repeats, "folds": fold_records,
              "options": {k: getattr(options, k) for k in ("beta", "pairs_per_step", "epochs_per_round", "lora_r",
                                                          "lora_alpha", "bf16")},
              "machine": this_machine("cpu"), "date": time.strftime("%Y-%m-%d %H:%M"),
              "settings": settings, "rows": rows}
    out = Path(args.out or f"plugins/dpbench-popri/analysis/results/dpo_generalisation_{suite.name}.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
