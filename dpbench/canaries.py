"""Canary exposure: does a method's output leak private text?

Random secret texts ("canaries") are planted in private clients (the dataset option
``canaries``); after a method returns, ``canary_report`` counts the canaries its output
contains verbatim and ranks each canary's likelihood against never-planted texts of the same
format, the exposure test of Carlini et al. (2019), "The Secret Sharer". A DP method should
neither reproduce a canary nor rank it above the texts it never saw.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

from dpbench.api import SyntheticTexts, TrainedModel
from dpbench.api.config import check_int
from dpbench.errors import ConfigError

CANARY_PREFIX = "the secret canary code is"
MIN_CANDIDATES = 20  # a rank of 1 flags a leak only among at least this many candidates
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_CANARY_STREAM, _REFERENCE_STREAM, _PLANT_STREAM = range(3)

Scorer = Callable[[Sequence[str]], Sequence[float]]


def make_canaries(count: int, *, seed: int, words: int = 8) -> list[str]:
    """``count`` distinct canaries: ``CANARY_PREFIX`` and ``words`` random pseudo-words such
    as ``kafo7``, so no real text contains one by chance. Deterministic in ``seed``."""
    return _secret_texts(count, seed=seed, words=words, stream=_CANARY_STREAM)


def reference_canaries(count: int, *, seed: int, words: int = 8) -> list[str]:
    """``count`` texts in the canaries' format from a stream independent of
    ``make_canaries``: never planted, they are the population a canary is ranked against."""
    return _secret_texts(count, seed=seed, words=words, stream=_REFERENCE_STREAM)


def _secret_texts(count: int, *, seed: int, words: int, stream: int) -> list[str]:
    check_int("count", count, minimum=0)
    check_int("seed", seed, minimum=0)
    check_int("words", words, minimum=1)
    rng = _rng(seed, stream)
    texts: dict[str, None] = {}
    while len(texts) < count:
        consonants = rng.integers(len(_CONSONANTS), size=(words, 2))
        vowels = rng.integers(len(_VOWELS), size=(words, 2))
        digits = rng.integers(10, size=words)
        secret = (
            f"{_CONSONANTS[c[0]]}{_VOWELS[v[0]]}{_CONSONANTS[c[1]]}{_VOWELS[v[1]]}{d}"
            for c, v, d in zip(consonants, vowels, digits, strict=True)
        )
        texts.setdefault(" ".join([CANARY_PREFIX, *secret]), None)
    return list(texts)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def plant(clients: Mapping[str, tuple[str, ...]], canaries: Sequence[str], *, seed: int) -> dict[str, tuple[str, ...]]:
    """A copy of ``clients`` with each canary appended as one extra text of its own client
    (distinct clients, a seeded random choice): one user holds each secret, as user-level DP
    assumes."""
    if len(canaries) > len(clients):
        raise ConfigError("canaries", len(canaries), f"at most {len(clients)} (one training client per canary)")
    ids = sorted(clients)
    chosen = _rng(seed, _PLANT_STREAM).choice(len(ids), size=len(canaries), replace=False)
    planted = {cid: tuple(texts) for cid, texts in clients.items()}
    for index, canary in zip(chosen, canaries, strict=True):
        planted[ids[index]] += (canary,)
    return planted


def _words(text: str) -> list[str]:
    return text.lower().split()


def verbatim_hits(texts: Sequence[str], canaries: Sequence[str], *, n: int = 6) -> list[bool]:
    """For each canary, whether any run of ``n`` of its words (all of it when shorter) appears
    in one of ``texts``, comparing lower-cased, whitespace-normalised words."""
    check_int("n", n, minimum=1)
    padded = [f" {' '.join(_words(t))} " for t in texts]
    hits = []
    for canary in canaries:
        words = _words(canary)
        size = min(n, len(words))
        grams = {f" {' '.join(words[i : i + size])} " for i in range(len(words) - size + 1)}
        hits.append(any(gram in text for text in padded for gram in grams))
    return hits


def exposure_ranks(score: Scorer, canaries: Sequence[str], references: Sequence[str]) -> list[int]:
    """Each canary's rank (1 = most likely) among itself and ``references`` under ``score``
    (log-likelihoods, higher = more likely). Ties count against the canary, so a scorer
    that cannot tell texts apart never ranks a canary first."""
    scores = list(score([*canaries, *references]))
    own, others = scores[: len(canaries)], np.asarray(scores[len(canaries) :], dtype=float)
    return [1 + int(np.count_nonzero(others >= s)) for s in own]


def ngram_scorer(texts: Sequence[str]) -> Scorer:
    """Log-likelihood under an add-one smoothed word bigram model of ``texts`` (lower-cased,
    with sentence boundaries): a cheap stand-in for a language model trained on synthetic
    texts, enough to see whether a canary's rare word pairs were reproduced."""
    contexts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    vocabulary = {"</s>"}
    for text in texts:
        words = ["<s>", *_words(text), "</s>"]
        contexts.update(words[:-1])
        pairs.update(pairwise(words))
        vocabulary.update(words[1:])
    size = len(vocabulary) + 1  # one more word: everything unseen

    def score(candidates: Sequence[str]) -> list[float]:
        out = []
        for text in candidates:
            words = ["<s>", *_words(text), "</s>"]
            out.append(sum(math.log((pairs[a, b] + 1) / (contexts[a] + size)) for a, b in pairwise(words)))
        return out

    return score


def causal_lm_scorer(
    model_dir: str | Path, *, tokenizer_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 64
) -> Scorer:
    """Summed token log-likelihood of each text (after a BOS token) under the causal LM saved
    in ``model_dir``. The tokenizer is read from ``tokenizer_dir``, default ``model_dir``
    (a ``TrainedModel`` folder may hold the model only: pass the evaluator's
    ``initial_model`` folder then). Texts longer than the model's context are scored on
    their first tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpbench.evaluation.lm import collate

    tokenizer_dir = model_dir if tokenizer_dir is None else tokenizer_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ConfigError("tokenizer_dir", str(tokenizer_dir), "a tokenizer with a BOS or EOS token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device).eval()
    limit = model.config.max_position_embeddings

    def score(texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        rows = [([start, *ids])[:limit] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        out: list[float] = []
        with torch.inference_mode():
            for first in range(0, len(rows), batch_size):
                batch = collate(rows[first : first + batch_size], pad, device)
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
                log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = log_probs.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
                out.extend((picked * batch.attention_mask[:, 1:]).sum(dim=1).tolist())
        return out

    return score


def canary_report(
    artifact: SyntheticTexts | TrainedModel,
    canaries: Sequence[str],
    references: Sequence[str],
    *,
    tokenizer_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """How much of ``canaries`` a method's ``artifact`` exposes.

    ``SyntheticTexts`` are searched for verbatim canaries (``verbatim_hits``) and ranked with
    ``ngram_scorer`` trained on them; a ``TrainedModel`` is ranked with ``causal_lm_scorer``
    (``tokenizer_dir`` and ``device`` go to it) and has no texts, so ``verbatim`` is None.
    ``flagged`` is the rule: some canary appears verbatim, or some canary ranks 1st among at
    least ``MIN_CANDIDATES`` candidates (itself and ``references``). A model that never saw
    the canaries ranks each 1st with chance 1/candidates, so use many references (hundreds)
    to keep false alarms rare.
    """
    if not canaries:
        raise ConfigError("canaries", list(canaries), "at least one canary text")
    if isinstance(artifact, SyntheticTexts):
        verbatim = sum(verbatim_hits(artifact.texts, canaries))
        score = ngram_scorer(artifact.texts)
    elif isinstance(artifact, TrainedModel):
        verbatim = None
        score = causal_lm_scorer(artifact.path, tokenizer_dir=tokenizer_dir, device=device)
    else:
        raise TypeError(f"canary_report needs SyntheticTexts or TrainedModel, not {type(artifact).__name__}")
    ranks = exposure_ranks(score, canaries, references)
    candidates = len(references) + 1
    return {
        "canaries": len(canaries),
        "verbatim": verbatim,
        "ranks": ranks,
        "best_rank": min(ranks),
        "candidates": candidates,
        "flagged": bool(verbatim) or (candidates >= MIN_CANDIDATES and min(ranks) == 1),
    }
