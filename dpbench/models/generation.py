"""Text generation behind one interface: transformers (CPU/GPU) and vLLM (GPU).

Both backends take the same ``SamplingParams`` and the same prompts, and tokenize prompts
the same way (with the Hugging Face tokenizer, chat template applied for message lists), so
the model sees identical token ids whichever backend runs it. LoRA adapters are applied
without merging: PEFT adapters on the transformers model, ``LoRARequest`` in vLLM.

Determinism: transformers draws every token through a ``NucleusSampler`` with its own
generator, seeded per batch from ``seed`` (the caller's RNG state is untouched): same prompts,
batch size, seed and machine give the same texts. vLLM gets one seed per request, derived
from ``seed`` and the prompt's index.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpbench.api.config import check_choice, check_int, check_positive
from dpbench.errors import ConfigError

Message = Mapping[str, str]
Prompt = str | Sequence[Message]

BACKENDS = ("transformers", "vllm")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings shared by every backend.

    ``temperature`` 0 means greedy decoding. ``stop`` strings end a text early; the stop string
    itself is not part of the returned text (as in vLLM's default).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        check_positive("temperature", self.temperature, allow_zero=True)
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError("top_p", self.top_p, "a number in (0, 1]")
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError("stop", self.stop, "a list of non-empty strings")


class Generator(ABC):
    """A loaded generator. ``tokenizer`` is the Hugging Face tokenizer of the model."""

    tokenizer: Any

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        seed: int,
        adapter: str | Path | None = None,
    ) -> list[str]:
        """One completion per prompt, in order.

        ``prompts``: plain strings (tokenized as they are) or chat message lists
        (``[{"role": "user", "content": ...}]``, formatted with the chat template plus the
        generation prompt). ``adapter``: a PEFT LoRA adapter folder applied on top of the base
        model for this call; ``None``: the model as loaded.
        """

    def close(self) -> None:  # noqa: B027 (optional hook, nothing to free by default)
        """Free the model (and GPU memory)."""

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt)


def prompt_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of one prompt, the same for every backend."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return list(ids)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    end = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            end = min(end, i)
    return text[:end]


def request_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_generator(backend: str, model: str, **kwargs) -> Generator:
    """A generator of ``backend`` (``transformers`` or ``vllm``) for model ``model``."""
    check_choice("backend", backend, BACKENDS)
    if backend == "vllm":
        kwargs.pop("batch_size", None)
        kwargs.pop("device", None)
        return VLLMGenerator(model, **kwargs)
    return TransformersGenerator(model, **kwargs)


# transformers ---------------------------------------------------------------------------------

class TransformersGenerator(Generator):
    """Batched sampling with ``model.generate`` (left padding), each draw made by a
    ``NucleusSampler`` seeded per batch from the call's seed.

    ``model`` is a name/path for the resolver, or an already loaded model (then pass
    ``tokenizer`` too), e.g. a ``PeftModel`` a method is training.
    """

    def __init__(
        self,
        model,
        *,
        tokenizer=None,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 16,
    ):
        from dpbench.models.resolve import load_causal_lm, load_tokenizer

        check_choice("dtype", dtype, DTYPES)
        check_int("batch_size", batch_size, minimum=1)
        if isinstance(model, str):
            self.name = model
            self.model = load_causal_lm(model, dtype=dtype, device=device)
            self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        else:
            if tokenizer is None:
                raise ConfigError("tokenizer", None, "a tokenizer when model is a loaded model object")
            self.name = getattr(getattr(model, "config", None), "_name_or_path", "<model object>")
            self.model, self.tokenizer = model, tokenizer
        self.device = device
        self.batch_size = batch_size
        self._adapters: dict[str, str] = {}  # adapter key -> PEFT adapter name
        self._owns_peft = False

    def generate(self, prompts, params, *, seed, adapter=None):
        import torch

        prompts = list(prompts)
        if not prompts:
            return []
        model = self._select_adapter(adapter)
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = [self.prompt_ids(p) for p in prompts]
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": pad_id,
                                  "do_sample": False}
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        out: list[str] = []
        context = model.disable_adapter() if (adapter is None and self._owns_peft) else _nullcontext()
        with torch.inference_mode(), context:
            for b in range(math.ceil(len(ids) / self.batch_size)):
                chunk = ids[b * self.batch_size : (b + 1) * self.batch_size]
                width = max(len(x) for x in chunk)
                input_ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in chunk], device=self.device)
                mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk], device=self.device)
                if params.temperature > 0:  # greedy decoding over the sampler's one-hot choice
                    kwargs["logits_processor"] = _logits_processors(NucleusSampler(
                        temperature=params.temperature, top_p=params.top_p,
                        generator=torch.Generator(device=self.device).manual_seed(request_seed(seed, b))))
                generated = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
                for row in generated[:, width:]:
                    text = tok.decode(row, skip_special_tokens=True)
                    out.append(cut_at_stop(text, params.stop))
        return out

    def _select_adapter(self, adapter):
        if adapter is None:
            return self.model
        from peft import PeftModel

        path = Path(adapter).expanduser().resolve()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError("adapter", str(adapter), "a PEFT adapter folder (with adapter_config.json)")
        stamp = sum(p.stat().st_mtime_ns for p in path.iterdir() if p.is_file())
        key = f"{path}:{stamp}"
        if key not in self._adapters:
            name = "a" + hashlib.sha256(key.encode()).hexdigest()[:12]
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
                self._owns_peft = True
            self.model.eval()
            for old_key, old_name in list(self._adapters.items()):  # keep one loaded adapter
                if old_key != key and old_name in self.model.peft_config:
                    self.model.set_adapter(name)
                    self.model.delete_adapter(old_name)
                    del self._adapters[old_key]
            self._adapters[key] = name
        self.model.set_adapter(self._adapters[key])
        return self.model

    def close(self) -> None:
        self.model = None


class NucleusSampler:
    """Draws each row's next token from the temperature-scaled, top-p-truncated distribution
    (transformers' ``TopPLogitsWarper`` nucleus: the most likely tokens until their mass reaches
    ``top_p``; the whole vocabulary at ``top_p`` 1) and returns scores that are 0 at the drawn
    token and -inf elsewhere, so greedy decoding emits the draw. The distribution is the
    sampler's, at a fraction of its cost on a CPU: a partial sort of the ``candidates`` most
    likely tokens instead of sorting the whole vocabulary (a full sort only for rows whose
    nucleus is larger), and one uniform draw per row through the cumulative distribution
    instead of an exponential draw for every token."""

    def __init__(self, *, temperature: float, top_p: float, generator, candidates: int = 1024):
        check_positive("temperature", temperature)
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ConfigError("top_p", top_p, "a number in (0, 1]")
        check_int("candidates", candidates, minimum=1)
        self.temperature, self.top_p, self.generator, self.candidates = temperature, top_p, generator, candidates

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p >= 1:
            tokens = self._draw(probs)
        else:
            values, indices = torch.topk(probs, min(self.candidates, probs.shape[-1]), dim=-1)
            larger = values.sum(dim=-1) < self.top_p  # the nucleus reaches past the candidates
            tokens = torch.empty(len(probs), dtype=torch.long, device=probs.device)
            if larger.any():
                full_values, full_indices = torch.sort(probs[larger], dim=-1, descending=True)
                tokens[larger] = full_indices.gather(-1, self._draw(self._nucleus(full_values))).squeeze(-1)
            if (~larger).any():
                tokens[~larger] = indices[~larger].gather(-1, self._draw(self._nucleus(values[~larger]))).squeeze(-1)
        chosen = torch.full_like(scores, -math.inf)
        return chosen.scatter_(-1, tokens.view(-1, 1), 0.0)

    def _nucleus(self, values):
        """Descending probabilities with every token outside the nucleus set to 0."""
        import torch

        above = values.cumsum(dim=-1) - values  # mass of the tokens ranked above each one
        return torch.where(above < self.top_p, values, torch.zeros_like(values))

    def _draw(self, weights):
        """One index per row, with probability proportional to ``weights`` (inverse CDF in
        float64; a zero weight is never drawn)."""
        import torch

        cumulative = weights.double().cumsum(dim=-1)
        u = torch.rand(len(weights), 1, generator=self.generator, dtype=torch.float64,
                       device=weights.device) * cumulative[:, -1:]
        last_positive = weights.shape[-1] - 1 - (weights.flip(-1) > 0).int().argmax(dim=-1, keepdim=True)
        return torch.minimum(torch.searchsorted(cumulative, u, right=True), last_positive)


def _logits_processors(*processors):
    from transformers import LogitsProcessorList

    return LogitsProcessorList(processors)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# vLLM -------------------------------------------------------------------------------------------

class VLLMGenerator(Generator):
    """vLLM engine (GPU). ``vllm`` is imported here, never at module import.

    LoRA adapters are served with ``LoRARequest`` (``enable_lora`` on, ranks up to
    ``max_lora_rank``), never merged into a checkpoint. Extra keyword arguments go to
    ``vllm.LLM`` (e.g. ``max_model_len``).
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "bfloat16",
        seed: int = 0,
        enable_lora: bool = True,
        max_lora_rank: int = 16,
        gpu_memory_utilization: float = 0.85,
        tokenizer=None,
        **engine_kwargs,
    ):
        from dpbench.models.resolve import load_tokenizer, resolve_model

        check_choice("dtype", dtype, DTYPES)
        try:
            import vllm
        except ImportError:
            raise ConfigError(
                "backend", "vllm", "an installed vLLM (pip install 'dpbench[gpu]', CUDA only); or backend: transformers"
            ) from None
        self.name = model
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=resolve_model(model),
            dtype=dtype,
            seed=seed,
            enable_lora=enable_lora,
            max_lora_rank=max_lora_rank,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_kwargs,
        )
        self._lora_ids: dict[str, int] = {}

    def generate(self, prompts, params, *, seed, adapter=None):
        prompts = list(prompts)
        if not prompts:
            return []
        inputs = [{"prompt_token_ids": self.prompt_ids(p)} for p in prompts]
        sampling = [
            self._vllm.SamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                seed=request_seed(seed, i),
                skip_special_tokens=True,
            )
            for i in range(len(prompts))
        ]
        lora = self._lora_request(adapter)
        outputs = self.llm.generate(inputs, sampling_params=sampling, lora_request=lora, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, params.stop) for o in outputs]

    def _lora_request(self, adapter):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = Path(adapter).expanduser().resolve()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError("adapter", str(adapter), "a PEFT adapter folder (with adapter_config.json)")
        stamp = sum(p.stat().st_mtime_ns for p in path.iterdir() if p.is_file())
        key = f"{path}:{stamp}"  # a rewritten adapter folder gets a fresh id (vLLM caches by id)
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        lora_id = self._lora_ids[key]
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(path))

    def close(self) -> None:
        self.llm = None
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
