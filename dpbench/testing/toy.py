"""Small, fast, real plugins for harness tests: a toy dataset, a DP method and an evaluator.

``toy_texts`` makes clients that each favour a few words; ``noisy_unigram`` releases the sum
of clients' unit-norm word-frequency vectors once per round through the shared privacy layer
(checkpointing every round) and samples texts from the noisy average; ``next_word`` scores
texts by bigram next-word accuracy. Tests register it with the ``toy_plugin`` fixture, or in a
subprocess with ``dpbench --plugins-dir`` on the ``toy_plugins_dir`` fixture's folder.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from dpbench.api import (
    Dataset,
    Evaluator,
    FederatedTextData,
    MechanismSpec,
    Method,
    MetricSpec,
    SyntheticTexts,
    atomic_write,
    hookimpl,
)
from dpbench.api.config import check_fraction, check_int, check_positive

VOCAB = tuple(f"w{i}" for i in range(40))


@dataclass(frozen=True)
class ToyTextsOptions:
    num_clients: int = 30
    texts_per_client: int = 6
    words_per_text: int = 8
    seed: int = 0

    def __post_init__(self):
        check_int("num_clients", self.num_clients, minimum=1)
        check_int("texts_per_client", self.texts_per_client, minimum=1)


class ToyTexts(Dataset):
    config_class = ToyTextsOptions

    def load(self, cache) -> FederatedTextData:
        c = self.config
        rng = np.random.default_rng(c.seed)
        private = np.r_[np.full(20, 5.0), np.ones(20)] / 120.0  # private text favours w0..w19
        public = np.ones(40) / 40.0

        def texts(probs, n):
            return tuple(" ".join(rng.choice(VOCAB, size=c.words_per_text, p=probs)) for _ in range(n))

        clients = {f"c{i:03d}": texts(private, c.texts_per_client) for i in range(c.num_clients)}
        return FederatedTextData(clients=clients, validation=texts(private, 20), public=texts(public, 40),
                                 test=texts(private, 40))


@dataclass(frozen=True)
class NoisyUnigramOptions:
    rounds: int = 3
    sampling_rate: float = 1.0
    num_texts: int = 50
    round_seconds: float = 0.0
    """sleep per round, so tests can kill a run between rounds"""

    def __post_init__(self):
        check_int("rounds", self.rounds, minimum=1)
        check_fraction("sampling_rate", self.sampling_rate)
        check_positive("round_seconds", self.round_seconds, allow_zero=True)


class NoisyUnigram(Method):
    config_class = NoisyUnigramOptions

    def mechanism(self, data):
        return MechanismSpec(rounds=self.config.rounds, sampling_rate=self.config.sampling_rate)

    def run(self, data, ctx):
        index = {w: i for i, w in enumerate(VOCAB)}
        ctx.clients.place("words", {cid: {"words": np.array([index[w] for text in texts for w in text.split()],
                                                            dtype=np.int64)}
                                    for cid, texts in data.clients.items()})
        total = np.zeros(len(VOCAB))
        for r in ctx.track(range(self.config.rounds), "rounds"):
            saved = ctx.checkpoint_dir / f"round{r}.npy"
            if saved.exists():
                total += np.load(saved)
                continue
            sampled = ctx.privacy.cohort(r)
            rows = np.vstack(list(ctx.clients.rows("dpbench.testing.toy:word_frequencies", sampled, inputs="words",
                                                   batch=len(sampled), width=len(VOCAB))))
            noisy = ctx.privacy.release_clipped_sum(f"round-{r}", rows, clip_norm=1.0, clients=sampled)
            with atomic_write(saved, "wb") as handle:
                np.save(handle, noisy)
            total += noisy
            ctx.report(r, {"round": r, "released_mass": float(noisy.sum())})
            time.sleep(self.config.round_seconds)
        probs = np.clip(total, 0, None) + 1e-9
        probs /= probs.sum()
        rng = ctx.rng("synthesis")
        return SyntheticTexts(texts=tuple(" ".join(rng.choice(VOCAB, size=8, p=probs))
                                          for _ in range(self.config.num_texts)))


def word_frequencies(inputs, payload, configs) -> np.ndarray:
    """``noisy_unigram``'s client step: each client's unit-norm word-count vector."""
    rows = np.array([np.bincount(held["words"], minlength=len(VOCAB)) for held in inputs], dtype=np.float64)
    for row in rows:
        norm = np.linalg.norm(row)
        if norm:
            row /= norm
    return rows


class NextWord(Evaluator):
    """Bigram next-word accuracy of a model fit on public + artifact texts."""

    version = "1"
    metrics = (MetricSpec("accuracy", True, "top-1 next-word accuracy"),
               MetricSpec("unseen_rate", False, "share of test contexts never seen in training"))
    primary_metric = "accuracy"

    def evaluate(self, artifact, data, ctx):
        return self._score(artifact.texts, data.public, data.test)

    def validation_score(self, artifact, data, ctx):
        return self._score(artifact.texts, data.public, data.validation)["accuracy"]

    @staticmethod
    def _score(texts, public, held_out) -> dict[str, float]:
        follows = defaultdict(Counter)
        unigram = Counter()
        for text in (*public, *texts):
            words = text.split()
            unigram.update(words)
            for a, b in zip(words, words[1:], strict=False):
                follows[a][b] += 1
        fallback = unigram.most_common(1)[0][0]
        hits = unseen = total = 0
        for text in held_out:
            words = text.split()
            for a, b in zip(words, words[1:], strict=False):
                guess = follows[a].most_common(1)[0][0] if follows[a] else fallback
                unseen += not follows[a]
                hits += guess == b
                total += 1
        return {"accuracy": hits / total, "unseen_rate": unseen / total}


@hookimpl
def register_datasets(register):
    register("toy_texts", ToyTexts)


@hookimpl
def register_methods(register):
    register("noisy_unigram", NoisyUnigram)


@hookimpl
def register_evaluators(register):
    register("next_word", NextWord)
