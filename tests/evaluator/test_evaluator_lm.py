"""The evaluator's mechanics: tokenization (once, correctly), masking, metric arithmetic, training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpbench.evaluation import lm

TEXTS = [f"The cells divide and the {w} grows {i} times" for i, w in enumerate(["tumour", "leaf", "root"] * 10)]


@pytest.fixture(scope="module")
def tok():
    return lm.train_tokenizer(TEXTS, 300)


def test_tokenizes_once_bos_text_eos(tok):
    text = "The cells divide"
    (ids,) = lm.encode_texts(tok, [text], 64)
    assert ids == [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert tok.decode(ids[1:-1]) == text
    assert len(ids) == len(tok.tokenize(text)) + 2
    # same ids as the paper's intended call: tokenizer(bos + text + eos, truncation=True)
    assert ids == tok(tok.bos_token + text + tok.eos_token, add_special_tokens=False)["input_ids"]


def test_the_double_tokenization_bug_would_fail(tok):
    """The released evaluator re-tokenized token strings as words (docs/evaluator.md); that
    produces other, more ids ("Ġ" re-encoded as bytes), which the checks above reject."""
    text = "The cells divide"
    (ours,) = lm.encode_texts(tok, [text], 64)
    pieces = [tok.bos_token, *tok.tokenize(text), tok.eos_token]
    buggy = tok(" ".join(pieces), add_special_tokens=False)["input_ids"]  # each piece becomes a "word"
    assert buggy != ours and len(buggy) > len(ours)
    assert tok.decode(buggy[1:-1]).strip() != text


def test_truncation_keeps_the_start(tok):
    long = " ".join(TEXTS[:5])
    (ids,) = lm.encode_texts(tok, [long], 10)
    assert len(ids) == 10 and ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    assert tok.decode(ids[1:]) and long.startswith(tok.decode(ids[1:]))


def test_collate_masks_padding(tok):
    batch = lm.collate([[5, 6, 7], [5, 8]], pad_id=tok.pad_token_id)
    assert batch.input_ids.tolist() == [[5, 6, 7], [5, 8, tok.pad_token_id]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.labels.tolist() == [[5, 6, 7], [5, 8, -100]]


def test_accuracy_arithmetic_by_hand():
    """Two sequences, vocabulary 6. Hand count: 3 target tokens; top-1 right once, top-5
    right twice; cross-entropy = mean of -log p(target) = (ln 2 + ln 100 + ln 5) / 3."""
    import torch

    p = [
        [[0.1, 0.1, 0.1, 0.5, 0.1, 0.1],    # predicts 3, target 3: top-1 and top-5 right
         [0.05, 0.1, 0.5, 0.2, 0.01, 0.14],  # target 4 has the lowest p: top-1 and top-5 wrong
         [0.2] * 5 + [0.0 + 1e-9],           # target is -100 (after EOS): skipped
         [1 / 6] * 6],
        [[0.1, 0.4, 0.1, 0.1, 0.1, 0.2],     # target 5 is second: top-1 wrong, top-5 right
         [1 / 6] * 6,                        # target is padding: skipped
         [1 / 6] * 6,
         [1 / 6] * 6],
    ]
    logits = torch.log(torch.tensor(p, dtype=torch.float32))
    labels = torch.tensor([[0, 3, 4, -100], [0, 5, -100, -100]])
    counts = lm.count_predictions(logits, labels)
    assert (counts.correct, counts.correct_top5, counts.tokens) == (1, 2, 3)
    metrics = counts.metrics()
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["top5_accuracy"] == pytest.approx(2 / 3)
    assert metrics["cross_entropy"] == pytest.approx((math.log(2) + math.log(100) + math.log(5)) / 3, rel=1e-5)


def test_counts_on_bf16_logits_equal_those_of_the_whole_batch_in_float():
    """Converting only the kept positions changes no count: the same float32 values reach
    top-k and the cross-entropy as when the whole padded batch was converted first."""
    import torch

    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 20, 300, generator=generator) * 3).to(torch.bfloat16)  # bf16 ties, as under autocast
    labels = torch.randint(0, 300, (6, 20), generator=generator)
    for row, length in enumerate([20, 3, 11, 1, 17, 8]):
        labels[row, length:] = lm.IGNORE
    assert lm.count_predictions(logits, labels) == lm.count_predictions(logits.float(), labels)


def test_score_micro_averages_over_batches(tok):
    model = lm.build_model(tok, n_layer=1, n_embd=16, n_head=2, max_length=32, seed=0)
    encoded = lm.encode_texts(tok, TEXTS[:9], 32)
    whole = lm.score(model, encoded, pad_id=tok.pad_token_id, batch_size=9)
    split = lm.score(model, encoded, pad_id=tok.pad_token_id, batch_size=2)
    assert whole["tokens"] == sum(len(e) - 1 for e in encoded)
    assert whole["accuracy"] == pytest.approx(split["accuracy"])
    assert whole["cross_entropy"] == pytest.approx(split["cross_entropy"], rel=1e-4)


def test_batch_order_fixed_budget():
    rng = np.random.default_rng(0)
    batches = list(lm.batch_order(5, steps=4, batch_size=3, rng=rng))
    assert len(batches) == 4 and all(len(b) == 3 for b in batches)
    flat = np.concatenate(batches)
    assert sorted(flat[:5]) == [0, 1, 2, 3, 4] and sorted(flat[5:10]) == [0, 1, 2, 3, 4]
    assert all(len(b) == 3 for b in lm.batch_order(1, steps=2, batch_size=3, rng=rng))  # tiny sets repeat


def test_training_is_deterministic_and_learns(tok):
    import torch

    encoded = lm.encode_texts(tok, TEXTS, 32)

    def trained(seed):
        model = lm.build_model(tok, n_layer=1, n_embd=32, n_head=2, max_length=32, seed=0)
        lm.train(model, encoded, pad_id=tok.pad_token_id, steps=15, batch_size=8, lr=5e-3, seed=seed)
        return model

    a, b, c = trained(1), trained(1), trained(2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
    untrained = lm.build_model(tok, n_layer=1, n_embd=32, n_head=2, max_length=32, seed=0)
    before = lm.score(untrained, encoded, pad_id=tok.pad_token_id)["cross_entropy"]
    assert lm.score(a, encoded, pad_id=tok.pad_token_id)["cross_entropy"] < before - 1


def test_lr_schedules():
    assert lm.lr_at(5, 10, 1.0, "constant", 0) == 1.0
    assert lm.lr_at(0, 10, 1.0, "cosine", 2) == 0.5
    assert lm.lr_at(2, 10, 1.0, "cosine", 2) == pytest.approx(1.0)
    assert lm.lr_at(10, 10, 1.0, "cosine", 2) == pytest.approx(0.0)
