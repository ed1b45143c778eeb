"""Every method and the evaluator on ``device: cuda`` against ``cpu``. Marked ``gpu``; skipped
without a CUDA GPU. On a GPU machine: ``python -m pytest -m gpu tests/gpu``.

No network and no embedded models: the generator (a 2-layer chat Llama) and the embedder (a
2-layer BERT sentence-transformer) are random-init stand-ins built here, the data is the toy
plugin's. Checked:

1. the same tiny suite (POPri, PE, DP-FedAvg and both references, ``next_token`` evaluator)
   completes on ``cuda`` and on ``cpu``; every metric is finite on ``cuda``, and the privacy
   side is device-independent: same noise multipliers, same ledger keys, same ε;
2. the GPU was really used (peak CUDA memory > 0 during the cuda run);
3. throughput of the two GPU-heavy loops at the paper's evaluator shape (distilGPT2: 6 layers,
   768 wide, 16k vocabulary, 128 tokens, bf16): the evaluator's AdamW training step and one
   DP-FedAvg client's local SGD update.

With ``DPBENCH_GPU_REPORT=DIR`` the figures are also written to ``DIR/cuda_check.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import pytest
from gpu_helpers import require_cuda, write_report

pytestmark = pytest.mark.gpu

TESTS = Path(__file__).resolve().parents[1]
METHODS = ("public_only", "nonprivate", "popri", "pe", "dp_fedavg")

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
        if result is None:
            continue
        privacy = result.privacy
        rows[spec.method.label] = {
            "metrics": result.metrics["next_token"],
            "noise_multiplier": privacy.get("noise_multiplier"),
            "epsilon_spent": privacy.get("epsilon_spent"),
            "ledger_keys": [r["key"] for r in privacy.get("releases", [])],
            "method_s": round(result.timings.get("method_s", 0.0), 2),
        }
    return {"completed": len(report.completed), "failed": report.failed, "seconds": round(seconds, 1), "runs": rows}


def tolerate_unhashable_datasets(monkeypatch) -> None:
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

    monkeypatch.setattr(arrow_dataset, "generate_fingerprint", fingerprint)


@pytest.fixture(scope="module")
def devices(tmp_path_factory) -> dict:
    """The tiny suite run on cuda, then on cpu, with the method plugins and the toy plugin
    registered (tests never load installed plugins)."""
    torch = require_cuda()
    import dpbench_dpfedavg
    import dpbench_pe
    import dpbench_popri
    from dpbench.plugins import registered

    folder = tmp_path_factory.mktemp("cuda-check")
    generator, embedder = tiny_models(folder)
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # RDP's order-by-order warnings while calibrating
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
            mp.syspath_prepend(str(TESTS / "plugins"))
            import toy

            tolerate_unhashable_datasets(mp)
            for name, plugin in (("popri", dpbench_popri), ("pe", dpbench_pe), ("dp_fedavg", dpbench_dpfedavg),
                                 ("toy", toy)):
                stack.enter_context(registered(plugin, name=name))
            torch.cuda.reset_peak_memory_stats()
            report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                      "cuda": run_suite("cuda", generator, embedder, folder)}
            report["cuda_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            report["cpu"] = run_suite("cpu", generator, embedder, folder)
    finally:
        absl.setLevel(level)
    write_report("cuda_check", report)
    return report


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_every_run_completes(devices, device):
    assert devices[device]["failed"] == {}
    assert devices[device]["completed"] == len(METHODS)
    assert set(devices[device]["runs"]) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_metrics_are_finite_on_cuda(devices, method):
    metrics = devices["cuda"]["runs"][method]["metrics"]
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics


@pytest.mark.parametrize("method", METHODS)
def test_privacy_is_device_independent(devices, method):
    """Same σ, same ledger keys, same ε on cuda and cpu: the device changes the arithmetic of
    the method and the evaluator, never the privacy bookkeeping."""
    cuda, cpu = devices["cuda"]["runs"][method], devices["cpu"]["runs"][method]
    for field in ("noise_multiplier", "epsilon_spent", "ledger_keys"):
        assert cuda[field] == cpu[field], field


def test_the_cuda_run_used_the_gpu(devices):
    assert devices["cuda_peak_memory_mb"] > 0


def test_paper_scale_throughput(record_property):
    """Tokens/s of the evaluator's training step and seconds of one DP-FedAvg client update at
    the paper's evaluator shape (46.7 M parameters, 128 tokens, bf16)."""
    torch = require_cuda()
    from dpbench.evaluation import lm
    from dpbench_dpfedavg.method import flat, local_update

    texts = [" ".join(f"word{(i * 13 + j * 7) % 5000}" for j in range(160)) for i in range(2000)]
    tok = lm.train_tokenizer(texts[:500], 16384)
    model = lm.build_model(tok, n_layer=6, n_embd=768, n_head=12, max_length=128, seed=0).to("cuda")
    encoded = lm.encode_texts(tok, texts, 128)
    steps = 30
    out = {"parameters": sum(p.numel() for p in model.parameters())}
    for batch in (32, 160):
        lm.train(model, encoded, pad_id=tok.pad_token_id, steps=3, batch_size=batch, lr=1e-4, seed=0, bf16=True,
                 device="cuda")  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        lm.train(model, encoded, pad_id=tok.pad_token_id, steps=steps, batch_size=batch, lr=1e-4, seed=0, bf16=True,
                 device="cuda")
        torch.cuda.synchronize()
        out[f"evaluator_train_batch{batch}_tokens_per_s"] = round(steps * batch * 128 / (time.perf_counter() - start))
    weights = flat(list(model.parameters()))
    client = encoded[:64]  # one client: 64 texts, 8 local steps of batch 8
    local_update(model, weights, client, pad_id=tok.pad_token_id, epochs=1, batch_size=8, lr=0.1, seed=0, bf16=True,
                 device="cuda")  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for seed in range(5):
        local_update(model, weights, client, pad_id=tok.pad_token_id, epochs=1, batch_size=8, lr=0.1, seed=seed,
                     bf16=True, device="cuda")
    torch.cuda.synchronize()
    out["dp_fedavg_client_update_s"] = round((time.perf_counter() - start) / 5, 4)
    for name, value in out.items():
        record_property(name, value)
    write_report("cuda_throughput", out)
    print(json.dumps(out))
    assert all(math.isfinite(v) and v > 0 for v in out.values()), out
