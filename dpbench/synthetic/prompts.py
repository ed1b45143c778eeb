"""Prompts that show a generator a few random public seed texts and ask for one more.

Two styles: ``chat``, one user message (instruct models), and ``list``, POPri's "Original
Text Sample n" list that a base model continues. Public texts never overlap private clients,
so choosing and showing them spends no privacy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from dpbench.errors import DataError

PROMPT_STYLES = ("chat", "list")

# POPri's paper template: a list the model continues.
LIST_HEADER = "List of {total} diverse original text samples:"
LIST_ITEM = "Original Text Sample {n}: {text}"
LIST_STOP = ("Original Text Sample", "Orig")
CHAT_INSTRUCTION = ("Here are some example paragraphs:\n\n{examples}\n\n"
                    "Write one new paragraph like these. Reply with the paragraph only.")


# An instruct generator's reply opening ("Here's a revised version of the paragraph:", "Sure, here
# is one new paragraph:"): a lead-in naming the reply itself, up to its colon.
CHAT_PREAMBLE = re.compile(
    r"(?:here(?:'s|’s| is| are)|sure|certainly)\b[^:]{0,100}?\b(?:paragraphs?|versions?|examples?|texts?|samples?"
    r"|rewrit\w*|revis\w*|rephras\w*|reword\w*|edit\w*|continuation|responses?|paraphrase|attempt|alternative"
    r"|another one)\b[^:]{0,100}:\s*", re.IGNORECASE)


def clean(text: str) -> str:
    """Whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def choose_examples(num_public: int, *, prompts: int, per_prompt: int, rng: np.random.Generator) -> np.ndarray:
    """``prompts`` × ``per_prompt`` distinct public-text indices per row."""
    if num_public < per_prompt:
        raise DataError(f"the public seed set has {num_public} texts; each prompt needs {per_prompt}")
    return np.stack([rng.choice(num_public, size=per_prompt, replace=False) for _ in range(prompts)])


def build_prompt(examples: Sequence[str], style: str):
    """A plain string (``list``) or a chat message list (``chat``)."""
    examples = [clean(t) for t in examples]
    if style == "list":
        lines = [LIST_HEADER.format(total=2 * len(examples))]
        lines += [LIST_ITEM.format(n=i + 1, text=t) for i, t in enumerate(examples)]
        lines.append(f"Original Text Sample {len(examples) + 1}:")
        return "\n".join(lines)
    return [{"role": "user", "content": CHAT_INSTRUCTION.format(examples="\n\n".join(examples))}]


def stop_strings(style: str) -> tuple[str, ...]:
    """Where a completion of a ``build_prompt`` prompt ends: the next list item (``list``) or nowhere early."""
    return LIST_STOP if style == "list" else ()


def strip_preamble(text: str) -> str:
    """``text`` without the chat preambles it opens with (``CHAT_PREAMBLE``, repeated ones too);
    a text that is nothing but a preamble stays as it is."""
    while (match := CHAT_PREAMBLE.match(text)) and match.end() < len(text):
        text = text[match.end():]
    return text


def postprocess(text: str, tokenizer, max_tokens: int, *, strip_preambles: bool = False) -> str:
    """Whitespace-normalised, without chat preambles if ``strip_preambles``, and cut to
    ``max_tokens`` generator tokens."""
    text = clean(text)
    if strip_preambles:
        text = strip_preamble(text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).strip()
