"""What the analysis scripts read from a suite's finished runs: their returned texts, and the
means of per-run rows over seeds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

ROW_KEY = ("dataset", "method", "epsilon")


def finished_texts(suite) -> Iterator[tuple]:
    """``(spec, result, texts)`` for each finished run of ``suite`` that returned synthetic texts,
    in the suite's order; the texts are the run's saved artifact, checked against its seal."""
    from dpbench.api import SyntheticTexts
    from dpbench.results import load_artifact, load_result

    for spec in suite.runs:
        folder = suite.folder / spec.run_id
        result = load_result(folder)
        artifact = None if result is None else load_artifact(folder)
        if isinstance(artifact, SyntheticTexts) and artifact.texts:
            yield spec, result, list(artifact.texts)


def preamble_share(texts: Sequence[str]) -> float:
    """The share of ``texts`` that open with a chat preamble (the rule ``strip_preambles`` applies)."""
    from dpbench.synthetic.prompts import CHAT_PREAMBLE

    return sum(bool(CHAT_PREAMBLE.match(text)) for text in texts) / len(texts)


def means_by_row(rows: Iterable[dict], keys: Sequence[str]) -> list[dict]:
    """The mean of each of ``keys`` over the rows of one (dataset, method, ε), with their count,
    rounded to 4 places; rows in first-seen order."""
    groups = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in ROW_KEY)].append(row)
    return [{**dict(zip(ROW_KEY, key, strict=True)), "runs": len(group),
             **{k: round(sum(r[k] for r in group) / len(group), 4) for k in keys}}
            for key, group in groups.items()]
