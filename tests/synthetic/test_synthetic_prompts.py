"""Prompts of public seed texts, checked by hand."""

import numpy as np
import pytest

from dpbench.synthetic.prompts import build_prompt, choose_examples, clean, postprocess, stop_strings, strip_preamble


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
    assert postprocess("Here is a new paragraph: one two three four", WordTokenizer(), 3) == "Here is a"
    assert postprocess("Here is a new paragraph: one two three four", WordTokenizer(), 3,
                       strip_preambles=True) == "one two three"


@pytest.mark.parametrize(("text", "stripped"), [
    ("Here's a revised version of the paragraph: We must act.", "We must act."),
    ("Sure, here is one new paragraph: Here’s a rewritten version: We must act.", "We must act."),
    ("Certainly! Here's another one: We must act.", "We must act."),
    ("HERE ARE SOME EXAMPLES: We must act.", "We must act."),
    ("Here is a new paragraph:", "Here is a new paragraph:"),  # nothing but a preamble: kept
    # openings of real State of the Union paragraphs: they name no reply, so they stay
    ("Here's some good news: In the past 6 years, we have cut the welfare rolls.", None),
    ("Here is another question we had to face at the war's close: Would we continue?", None),
    ("Here are some other production figures:", None),
    ("The paragraph below is mine: We must act.", None),
])
def test_strip_preamble_drops_the_generators_lead_in_only(text, stripped):
    assert strip_preamble(text) == (text if stripped is None else stripped)


def test_options_refuse_a_public_seed_set_too_small_for_one_prompt():
    from dpbench.errors import ConfigError
    from dpbench.synthetic.options import GeneratorOptions

    options = GeneratorOptions(examples_per_prompt=3)
    options.check_public_seeds(["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"examples_per_prompt.*at most the 2 public seed texts"):
        options.check_public_seeds(["a", "b"])
