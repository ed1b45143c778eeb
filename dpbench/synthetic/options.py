"""The options every synthetic-text method shares: generator, sampling, prompts, embedder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dpbench.api.config import (
    OMIT_AT_DEFAULT,
    check_bf16,
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_positive,
)
from dpbench.errors import ConfigError
from dpbench.models.generation import BACKENDS, DECODE_LOOPS, Generator, SamplingParams, make_generator
from dpbench.synthetic.prompts import PROMPT_STYLES, build_prompt, choose_examples, postprocess


@dataclass(frozen=True)
class GeneratorOptions:
    """Base class of a synthetic-text method's options.

    A method's options dataclass inherits these fields, so a suite sets them flat beside the
    method's own (``methods.pe.max_new_tokens``) and two methods on the same defaults differ
    only in their algorithm. The defaults are a CPU-scaled setting for a 135M instruct model.
    A subclass that checks more fields calls ``super().__post_init__()`` first.
    """

    model: str = "smollm2-135m-instruct"
    """generator: a name the model resolver knows, or a local folder"""
    backend: str = "transformers"
    """transformers (CPU/GPU) or vllm (GPU)"""
    decode_loop: str = "dpbench"
    """transformers backend: dpbench's decode loop (Llama-family models; others fall back) or
    transformers' ``generate`` (benchmarks/results/generation_loop-*.json)"""
    bf16: bool | str = "auto"
    """bfloat16 generation: true, false or auto (where the device computes bf16 natively:
    dpbench/models/precision.py)"""
    generation_batch_size: int = 128
    """prompts per forward pass (transformers only; vLLM batches itself); on 2 CPU cores 64 and
    128 generate ~1.25x the tokens/s of 32 (benchmarks/results/sampling.json)"""
    embedder: str = "all-minilm-l6-v2"
    """sentence embedder that compares synthetic texts with private and validation texts"""
    examples_per_prompt: int = 3
    """public seed texts shown in each prompt"""
    prompt_style: str = "chat"
    """chat: one user message (instruct models); list: POPri's "Original Text Sample n" list (base models)"""
    temperature: float = 1.0
    """sampling temperature (0: greedy)"""
    top_p: float = 1.0
    """nucleus sampling: draw from the smallest set of tokens with this much probability"""
    max_new_tokens: int = 64
    """tokens generated per completion at most"""
    truncate_tokens: int = 64
    """completions are cut to this many generator tokens"""
    strip_preambles: bool = field(default=False, metadata=OMIT_AT_DEFAULT)
    """drop the chat preamble a completion opens with ("Here's a revised version of the
    paragraph:"), an instruct generator's habit that the private texts do not share, before the
    method embeds, ranks or returns it (dpbench/synthetic/prompts.py: CHAT_PREAMBLE)"""

    def __post_init__(self):
        check_choice("backend", self.backend, BACKENDS)
        check_choice("decode_loop", self.decode_loop, DECODE_LOOPS)
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        for name in ("generation_batch_size", "examples_per_prompt", "max_new_tokens", "truncate_tokens"):
            check_int(name, getattr(self, name), minimum=1)
        check_positive("temperature", self.temperature, allow_zero=True)
        if self.backend == "vllm" and self.temperature > 2:
            raise ConfigError("temperature", self.temperature, "a number in [0, 2] with backend: vllm (vLLM's range)")
        check_fraction("top_p", self.top_p)
        check_bf16("bf16", self.bf16)
        check_bool("strip_preambles", self.strip_preambles)

    def generator(self, device: str, *, max_lora_rank: int | None = None) -> Generator:
        """The generator these options name, loaded on ``device``, serving LoRA adapters up to
        rank ``max_lora_rank`` (``None``: none; vLLM reserves memory for that rank)."""
        from dpbench.models.precision import use_bf16

        return make_generator(self.backend, self.model, dtype="bfloat16" if use_bf16(self.bf16, device) else "float32",
                              batch_size=self.generation_batch_size, device=device, max_lora_rank=max_lora_rank,
                              decode_loop=self.decode_loop)

    def sampling(self, stop: tuple[str, ...] = ()) -> SamplingParams:
        """These options' sampling settings, ending completions at ``stop``."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              stop=stop)

    def check_public_seeds(self, public: Sequence[str]) -> None:
        """Refuse, before any work, a public seed set too small to fill one prompt (the error
        names the option; ``choose_examples`` refuses it too, later)."""
        if len(public) < self.examples_per_prompt:
            raise ConfigError("examples_per_prompt", self.examples_per_prompt,
                              f"at most the {len(public)} public seed texts the dataset has")

    def public_prompts(self, public: Sequence[str], *, count: int, rng) -> list:
        """``count`` prompts, each showing ``examples_per_prompt`` random public seed texts
        (drawn with ``rng``) in ``prompt_style``."""
        rows = choose_examples(len(public), prompts=count, per_prompt=self.examples_per_prompt, rng=rng)
        return [build_prompt([public[i] for i in row], self.prompt_style) for row in rows]

    def complete(self, generator: Generator, prompts: Sequence, *, stop: tuple[str, ...], seed: int,
                 adapter: str | None = None) -> list[str]:
        """One completion of each prompt, sampled with these options (ending at ``stop``),
        cleaned (``strip_preambles``) and cut to ``truncate_tokens`` generator tokens."""
        raw = generator.generate(list(prompts), self.sampling(stop), seed=seed, adapter=adapter)
        return [postprocess(text, generator.tokenizer, self.truncate_tokens, strip_preambles=self.strip_preambles)
                for text in raw]
