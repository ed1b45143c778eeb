"""VARIATION_API prompts: Aug-PE's open-model paraphrase with a random tone.

RANDOM_API uses the toolkit's prompt (``dpbench.toolkit.build_prompt``, POPri's): a few
random public seed texts.
"""

from __future__ import annotations

from dpbench.toolkit import clean

# Domain-neutral tones in the style of Aug-PE's lists (AI-secure/aug-pe, apis/utils.py).
TONES = (
    "in a professional way", "in a casual way", "in a formal manner", "in a concise manner",
    "with more details", "in a storytelling tone", "in a creative style", "using a variety of sentence structures",
)
CHAT_INSTRUCTION = ("Please rephrase the following paragraph {tone}:\n\n{text}\n\n"
                    "Reply with the rephrased paragraph only.")
LIST_TEMPLATE = "Please rephrase the following paragraph {tone}.\nOriginal paragraph: {text}\nRephrased paragraph:"
LIST_STOP = ("\n\n", "Original paragraph:")


def variation_prompt(text: str, tone: str, style: str):
    """A chat message list (``chat``) or a plain string (``list``) asking for one paraphrase."""
    if style == "list":
        return LIST_TEMPLATE.format(tone=tone, text=clean(text))
    return [{"role": "user", "content": CHAT_INSTRUCTION.format(tone=tone, text=clean(text))}]


def variation_stop(style: str) -> tuple[str, ...]:
    return LIST_STOP if style == "list" else ()
