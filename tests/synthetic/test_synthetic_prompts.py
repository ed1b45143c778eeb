"""Prompts of public seed texts, checked by hand."""

import numpy as np
import pytest

from dpbench.synthetic.prompts import build_prompt, choose_examples, clean, postprocess, stop_strings


def test_examples_are_distinct_within_a_prompt_and_seeded():
    rows = choose_examples(5, prompts=40, per_prompt=3, rng=np.random.default_rng(0))
    assert rows.shape == (40, 3) and all(len(set(row)) == 3 for row in rows) and rows.max() < 5
    np.testing.assert_array_equal(rows, choose_examples(5, prompts=40, per_prompt=3, rng=np.random.default_rng(0)))
    with pytest.raises(ValueError, match="has 2 texts; each prompt needs 3"):
        choose_examples(2, prompts=1, per_prompt=3, rng=np.random.default_rng(0))


def test_both_styles():
    assert build_prompt(["a\n b", "c"], "list") == (
        "List of 4 diverse original text samples:\nOriginal Text Sample 1: a b\nOriginal Text Sample 2: c\n"
        "Original Text Sample 3:")
    (message,) = build_prompt(["a\n b", "c"], "chat")
    assert message["role"] == "user" and "a b\n\nc" in message["content"]
    assert stop_strings("list") == ("Original Text Sample", "Orig") and stop_strings("chat") == ()


class WordTokenizer:
    """One token per word."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(ids)


def test_postprocess_normalises_and_cuts_to_generator_tokens():
    assert clean("  one\n\ntwo\tthree ") == "one two three"
    assert postprocess("one\ntwo three four", WordTokenizer(), 3) == "one two three"
    assert postprocess(" one  two ", WordTokenizer(), 3) == "one two"


def test_options_refuse_a_public_seed_set_too_small_for_one_prompt():
    from dpbench.errors import ConfigError
    from dpbench.synthetic.options import GeneratorOptions

    options = GeneratorOptions(examples_per_prompt=3)
    options.check_public_seeds(["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"examples_per_prompt.*at most the 2 public seed texts"):
        options.check_public_seeds(["a", "b"])
