"""The toolkit a method plugin may build on, beside the contracts in ``dpbench.api``.

A plugin imports dpbench only through ``dpbench.api`` and this module; everything else in
dpbench may change without notice.

Synthetic text from public seed texts (``dpbench.synthetic``):

- ``GeneratorOptions``: base class of a method's options; generator, sampling, prompt and
  embedder fields, set flat in a suite, plus ``generator(device)``, ``sampling(stop)``,
  ``public_prompts(public, count=, rng=)`` and ``complete(generator, prompts, stop=, seed=)``.
- ``PROMPT_STYLES``, ``choose_examples``, ``build_prompt``, ``stop_strings``, ``clean``,
  ``postprocess``: prompts of random public seed texts and the cleanup of their completions.
- ``round_metrics``, ``frechet_distance``, ``mean_pairwise_cosine``: quality and diversity of
  synthetic embeddings against the validation split (no privacy spent).
- ``normalise_rows``: rows at unit L2 norm (zero rows stay zero), so dot products are cosines.
- ``lora_config``, ``trl_completion``: the LoRA adapter on the generator that POPri's DPO and
  PE+SFT train, and a completion in the form trl takes after a prompt of a given style.
- ``prompt_cached_forward``, ``prompt_cached``, ``prompt_cached_sft_trainer``: trl's fused
  forward with the prompt run once into a KV cache and only completions through the LM head
  (POPri's DPO, PE+SFT's SFT): same loss and gradients, a fraction of the compute on a CPU.

Models:

- ``make_generator``, ``SamplingParams``, ``prompt_token_ids``: text generation on the
  transformers or vLLM backend, same prompts and token ids on both.
- ``Embedder``, ``embed_clients``, ``embed_split``: sentence embeddings, cached by content.
- ``load_causal_lm``, ``load_tokenizer``: a model or tokenizer by resolver name or folder.
- ``use_bf16``: what a ``bf16`` option (true, false or auto) means on a device.

The evaluator's language-model helpers, for methods that train the downstream model:
``encode_texts``, ``collate``, ``score``.

The audit (``dpbench audit``) of a method's release: ``AuditMechanism``,
``clipped_sum_mechanism``, ``tree_aggregation_mechanism``, ``noisy_clipped_sum``, ``clip_rows``, ``gaussian_noise``.

Names are looked up in their home module on each access, so importing this module loads
neither numpy nor torch, and a test that patches a name there (``dpbench.testing``'s embedder)
reaches a plugin that imports it from here inside a function.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GeneratorOptions": "dpbench.synthetic.options",
    "PROMPT_STYLES": "dpbench.synthetic.prompts",
    "build_prompt": "dpbench.synthetic.prompts",
    "choose_examples": "dpbench.synthetic.prompts",
    "clean": "dpbench.synthetic.prompts",
    "postprocess": "dpbench.synthetic.prompts",
    "stop_strings": "dpbench.synthetic.prompts",
    "frechet_distance": "dpbench.synthetic.monitor",
    "mean_pairwise_cosine": "dpbench.synthetic.monitor",
    "round_metrics": "dpbench.synthetic.monitor",
    "normalise_rows": "dpbench.synthetic.similarity",
    "lora_config": "dpbench.synthetic.finetune",
    "trl_completion": "dpbench.synthetic.finetune",
    "prompt_cached": "dpbench.synthetic.finetune",
    "prompt_cached_forward": "dpbench.synthetic.finetune",
    "prompt_cached_sft_trainer": "dpbench.synthetic.finetune",
    "SamplingParams": "dpbench.models.generation",
    "make_generator": "dpbench.models.generation",
    "prompt_token_ids": "dpbench.models.generation",
    "Embedder": "dpbench.models.embedding",
    "embed_clients": "dpbench.models.embedding",
    "embed_split": "dpbench.models.embedding",
    "load_causal_lm": "dpbench.models.resolve",
    "load_tokenizer": "dpbench.models.resolve",
    "use_bf16": "dpbench.models.precision",
    "collate": "dpbench.evaluation.lm",
    "encode_texts": "dpbench.evaluation.lm",
    "score": "dpbench.evaluation.lm",
    "AuditMechanism": "dpbench.privacy.audit",
    "clipped_sum_mechanism": "dpbench.privacy.audit",
    "tree_aggregation_mechanism": "dpbench.privacy.audit",
    "clip_rows": "dpbench.privacy.noise",
    "gaussian_noise": "dpbench.privacy.noise",
    "noisy_clipped_sum": "dpbench.privacy.noise",
}

__all__ = list(_EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dpbench.toolkit' has no attribute {name!r}")
