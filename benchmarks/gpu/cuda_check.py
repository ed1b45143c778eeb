"""Every method and the evaluator on ``device: cuda`` (not run by the test suite).

Needs a CUDA GPU and dpbench with its plugins importable; no network and no embedded models:
the generator (a 2-layer chat Llama) and the embedder (a 2-layer BERT sentence-transformer)
are random-init stand-ins built here, the data is the test suite's toy plugin.

Checks:

1. the same tiny suite (POPri, PE, DP-FedAvg and both references, ``next_token`` evaluator)
   completes on ``cuda`` and on ``cpu``; every metric is finite, and the privacy side is
   device-independent: same noise multipliers, same ledger keys, same ε;
2. the GPU was really used (peak CUDA memory > 0 during the cuda run);
3. throughput of the two GPU-heavy loops at the paper-scale evaluator shape (distilGPT2: 6
   layers, 768 wide, 16k vocabulary, 128 tokens, bf16): the evaluator's AdamW training step and
   one DP-FedAvg client's local SGD update.

Run: ``python benchmarks/gpu/cuda_check.py [--out DIR]``; exits non-zero on a failed check and
writes ``cuda_check.json`` to ``--out`` (default ``$OUT`` or ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny_models(folder: Path) -> tuple[Path, Path]:
    """A random-init chat Llama (generator) and BERT sentence-transformer (embedder)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dpbench.testing import tiny_chat_llama

    generator = tiny_chat_llama(folder / "generator", hidden_size=64)
    tok = AutoTokenizer.from_pretrained(generator)
    bert = folder / "bert"
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
              ).save_pretrained(bert)
    tok.save_pretrained(bert)
    embedder = folder / "embedder"
    transformer = models.Transformer(str(bert), max_seq_length=128)
    SentenceTransformer(modules=[transformer, models.Pooling(32)]).save(str(embedder))
    return generator, embedder


SUITE = """\
description: CUDA check (tiny stand-in models, toy data)
seeds: 1
device: {device}
privacy: {{epsilon: [2], delta: 1e-4, accountant: pld}}
datasets:
  toy_texts: {{num_clients: 40}}
methods:
  public_only: {{}}
  nonprivate: {{}}
  popri: {{model: {generator}, embedder: {embedder}, rounds: 2, prompts_per_round: 6, samples_per_prompt: 3,
          reject_rank: 1, max_new_tokens: 12, truncate_tokens: 12, final_samples: 16, pairs_per_step: 3,
          epochs_per_round: 1, max_length: 128, bf16: true}}
  pe: {{model: {generator}, embedder: {embedder}, iterations: 2, synthetic_samples: 8, variations_per_sample: 1,
       max_new_tokens: 12, truncate_tokens: 12, bf16: true}}
  dp_fedavg: {{rounds: 3, clients_per_round: 10}}
evaluators:
  next_token: {{vocab_size: 300, n_layer: 2, n_embd: 64, n_head: 2, pretrain_steps: 30, pretrain_batch_size: 16,
               train_steps: 20, batch_size: 16, eval_every: 10}}
"""


def run_suite(device: str, generator: Path, embedder: Path, folder: Path) -> dict:
    """Run the tiny suite on ``device``; per method: metrics, σ, ledger keys, ε, seconds."""
    from dpbench.results import load_result
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    path = folder / f"cuda-check-{device}.yaml"
    path.write_text(SUITE.format(device=device, generator=generator, embedder=embedder))
    suite = load_suite(path, [], runs_dir=folder / "runs")
    start = time.perf_counter()
    report = Runner(suite, fail_fast=True).run()
    seconds = time.perf_counter() - start
    rows = {}
    for spec in suite.runs:
        result = load_result(suite.folder / spec.run_id)
        privacy = result.privacy
        rows[spec.method.label] = {
            "metrics": result.metrics["next_token"],
            "noise_multiplier": privacy.get("noise_multiplier"),
            "epsilon_spent": privacy.get("epsilon_spent"),
            "ledger_keys": [r["key"] for r in privacy.get("releases", [])],
            "method_s": round(result.timings.get("method_s", 0.0), 2),
        }
    return {"completed": len(report.completed), "failed": report.failed, "seconds": round(seconds, 1), "runs": rows}


def throughput(device: str, steps: int = 30) -> dict:
    """Tokens/s of the evaluator's training step and of one DP-FedAvg client update, paper shape."""
    import torch

    from dpbench.evaluation import lm
    from dpbench.evaluation.lm import train_tokenizer
    from dpbench_dpfedavg.method import flat, local_update

    texts = [" ".join(f"word{(i * 13 + j * 7) % 5000}" for j in range(160)) for i in range(2000)]
    tok = train_tokenizer(texts[:500], 16384)
    model = lm.build_model(tok, n_layer=6, n_embd=768, n_head=12, max_length=128, seed=0).to(device)
    encoded = lm.encode_texts(tok, texts, 128)
    out = {"parameters": sum(p.numel() for p in model.parameters())}
    for batch in (32, 160):
        lm.train(model, encoded, pad_id=tok.pad_token_id, steps=3, batch_size=batch, lr=1e-4, seed=0, bf16=True,
                 device=device)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        lm.train(model, encoded, pad_id=tok.pad_token_id, steps=steps, batch_size=batch, lr=1e-4, seed=0, bf16=True,
                 device=device)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out[f"evaluator_train_batch{batch}_tokens_per_s"] = round(steps * batch * 128 / seconds)
    weights = flat(list(model.parameters()))
    client = encoded[:64]  # one client: 64 texts, 8 local steps of batch 8
    local_update(model, weights, client, pad_id=tok.pad_token_id, epochs=1, batch_size=8, lr=0.1, seed=0, bf16=True,
                 device=device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for seed in range(5):
        local_update(model, weights, client, pad_id=tok.pad_token_id, epochs=1, batch_size=8, lr=0.1, seed=seed,
                     bf16=True, device=device)
    torch.cuda.synchronize()
    out["dp_fedavg_client_update_s"] = round((time.perf_counter() - start) / 5, 4)
    return out


def _tolerate_unhashable_datasets() -> None:
    """On some Python 3.12 images dill cannot pickle pyarrow's ``MonthDayNano`` while
    ``datasets`` fingerprints a new Dataset (trl builds one per DPO round); fall back to a random
    fingerprint there, as ``datasets`` itself does for unhashable transforms."""
    import datasets.arrow_dataset as arrow_dataset
    from datasets.fingerprint import generate_random_fingerprint

    original = arrow_dataset.generate_fingerprint

    def fingerprint(dataset):
        try:
            return original(dataset)
        except Exception:  # noqa: BLE001 - any pickling failure
            return generate_random_fingerprint()

    arrow_dataset.generate_fingerprint = fingerprint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    import logging

    import torch

    assert torch.cuda.is_available(), "needs a CUDA GPU"
    logging.getLogger("absl").setLevel(logging.ERROR)  # RDP's order-by-order warnings while calibrating
    _tolerate_unhashable_datasets()
    sys.path.insert(0, str(ROOT / "tests" / "plugins"))
    import toy

    from dpbench.plugins import register_plugin

    register_plugin(toy, name="toy")
    folder = Path(tempfile.mkdtemp(prefix="cuda-check-"))
    generator, embedder = tiny_models(folder)
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    failures: list[str] = []

    torch.cuda.reset_peak_memory_stats()
    report["cuda"] = run_suite("cuda", generator, embedder, folder)
    report["cuda_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    report["cpu"] = run_suite("cpu", generator, embedder, folder)
    for device in ("cuda", "cpu"):
        if report[device]["failed"] or report[device]["completed"] != 5:
            failures.append(f"{device}: {report[device]['completed']} of 5 runs completed; {report[device]['failed']}")
    if not failures:
        for method, gpu in report["cuda"]["runs"].items():
            cpu = report["cpu"]["runs"][method]
            if not all(math.isfinite(v) for v in gpu["metrics"].values()):
                failures.append(f"{method}: non-finite metric on cuda {gpu['metrics']}")
            for field in ("noise_multiplier", "epsilon_spent", "ledger_keys"):
                if gpu[field] != cpu[field]:
                    failures.append(f"{method}: {field} differs between cuda ({gpu[field]}) and cpu ({cpu[field]})")
    if report["cuda_peak_memory_mb"] <= 0:
        failures.append("the cuda run allocated no GPU memory")
    report["throughput"] = throughput("cuda")
    report["failures"] = failures
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "cuda_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print("FAILED:\n" + "\n".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
