"""POPri client scoring throughput: one matrix multiply vs the reference code's per-client loop.

Simulates L clients (10^2 ... 10^5) holding random unit-norm MiniLM-sized embeddings and scores
M synthetic samples (default: the paper's N·J = 18,000). The matrix path is dpbench's (client
sums, batched matmul, centring, unit norm); the loop re-normalises the sample matrix for every
client as the reference code's ``cos_sim`` call does, and is timed on a subset of clients (it is
linear in L). Prints and saves ``benchmarks/results/popri_scoring.json``.

    .venv/bin/python benchmarks/popri_scoring.py [--samples 18000] [--texts-per-client 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dpbench_popri.scoring import client_step, client_sums, normalise_rows, score_per_client_loop

BATCH = 4096
"""POPri's default score_batch_clients"""
DIM = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=18_000)
    parser.add_argument("--texts-per-client", type=int, default=8)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--loop-clients", type=int, default=200, help="clients the slow loop is timed on")
    parser.add_argument("--out", default="benchmarks/results/popri_scoring.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    samples = normalise_rows(rng.normal(size=(args.samples, DIM)))
    results = []
    for count in args.clients:
        ids = [f"c{i}" for i in range(count)]
        embeddings = {cid: normalise_rows(rng.normal(size=(args.texts_per_client, DIM))).astype(np.float32)
                      for cid in ids}
        client_texts = count * args.texts_per_client

        start = time.perf_counter()
        sums = client_sums(embeddings, ids, DIM)
        for first in range(0, count, BATCH):  # as the in-process runtime calls it (score_batch_clients)
            part = sums[first:first + BATCH]
            client_step([{"sum": row} for row in part], {"samples": samples}, [{}] * len(part))
        matmul_s = time.perf_counter() - start

        subset = ids[: min(count, args.loop_clients)]
        start = time.perf_counter()
        score_per_client_loop(samples, embeddings, subset)
        loop_s = (time.perf_counter() - start) * count / len(subset)

        row = {"clients": count, "client_texts": client_texts, "samples": args.samples,
               "matmul_seconds": round(matmul_s, 3), "matmul_client_texts_per_s": round(client_texts / matmul_s),
               "loop_seconds_extrapolated": round(loop_s, 2), "loop_timed_on_clients": len(subset),
               "loop_client_texts_per_s": round(client_texts / loop_s), "speedup": round(loop_s / matmul_s, 1)}
        results.append(row)
        print(json.dumps(row))
        del embeddings

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "popri_scoring", "machine": platform.platform(), "cpus": os.cpu_count(),
                               "texts_per_client": args.texts_per_client, "results": results}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
