"""Embedding statistics of the texts every synthetic-text run of a suite returned.

POPri's monitor shows its rounds moving the generator toward the validation centroid and
making its samples alike (per checkpoint, `state/monitor.json`). This puts the same statistics
(``round_metrics`` against the validation split) and two lexical ones (distinct word bigrams
over all bigrams; the share of texts that open with a chat preamble such as "Here's a revised
version:", the instruct generator's habit that ``strip_preambles`` removes,
``dpbench.synthetic.prompts.CHAT_PREAMBLE``) on the final texts of each finished run — POPri's,
PE's, the synthetic-public row's — beside its test and validation accuracy, so a board's order
can be read against what its texts look like. It generates nothing and spends no privacy: the
texts are each run's saved artifact (``synthetic.jsonl``, checked against its seal), which the
committed records do not keep (run it where the runs were made).

    .venv/bin/python plugins/dpbench-popri/analysis/final_texts.py suites/sotu-m1024.yaml \
        --runs-dir leaderboards/runs
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

STATISTICS = ("validation_centroid_cosine", "validation_nearest_cosine", "validation_fid", "mean_pairwise_cosine",
              "distinct_bigrams", "preamble_share", "mean_words")


def distinct_bigrams(texts: list[str]) -> float:
    """Distinct word bigrams over all bigrams of the set (1: no bigram repeats)."""
    bigrams = [pair for words in (text.split() for text in texts) for pair in zip(words, words[1:], strict=False)]
    return len(set(bigrams)) / max(len(bigrams), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dpbench run")
    parser.add_argument("--runs-dir", help="as for dpbench run")
    parser.add_argument("--embedder", default=None, help="default: the embedder of the suite's popri method, if any")
    parser.add_argument("--out", default=None, help="default: analysis/results/final_texts_<suite>.json")
    args = parser.parse_args()

    import numpy as np
    from finished_runs import finished_texts, means_by_row, preamble_share

    from dpbench.runner import Runner
    from dpbench.suite import load_suite
    from dpbench.toolkit import Embedder, embed_split, round_metrics

    suite = load_suite(args.suite, args.overrides, runs_dir=args.runs_dir)
    runner = Runner(suite)
    popri = next((s.method.options for s in suite.runs if s.method.plugin == "popri"), {})
    embedder = Embedder(args.embedder or popri.get("embedder") or Embedder().name)
    validation: dict[str, np.ndarray] = {}
    rows = []
    for spec, result, texts in finished_texts(suite):
        label = spec.dataset.label
        if label not in validation:
            validation[label] = embed_split(embedder, runner.dataset(spec.dataset), "validation", cache=runner.cache)
        stats = round_metrics(embedder.encode(texts), validation[label])
        scores = next(iter(result.metrics.values()))
        rows.append({"dataset": label, "method": spec.method.label, "epsilon": spec.epsilon, "seed": spec.seed,
                     "texts": len(texts), "test_accuracy": round(scores["accuracy"], 4),
                     "validation_accuracy": round(scores["validation_accuracy"], 4),
                     **{k: round(v, 4) for k, v in stats.items()},
                     "distinct_bigrams": round(distinct_bigrams(texts), 4),
                     "preamble_share": round(preamble_share(texts), 4),
                     "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1)})
    means = means_by_row(rows, ("test_accuracy", *STATISTICS))
    header = ["method", "ε", "runs", "test", *STATISTICS]
    print(" | ".join(header))
    for mean in means:
        print(" | ".join(str(v) for v in (mean["method"], f"{mean['epsilon']:g}", mean["runs"], mean["test_accuracy"],
                                          *(mean[k] for k in STATISTICS))))
    out = Path(args.out or Path(__file__).parent / "results" / f"final_texts_{suite.name}.json")
    out.write_text(json.dumps({"benchmark": "final_texts", "suite": suite.name, "overrides": args.overrides,
                               "embedder": embedder.name, "machine": platform.machine(), "means": means,
                               "runs": rows}, indent=1, ensure_ascii=False))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
