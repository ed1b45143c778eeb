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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpbench.api.config import check_choice, check_int, check_positive
from dpbench.errors import ConfigError

Message = Mapping[str, str]
Prompt = str | Sequence[Message]

BACKENDS = ("transformers", "vllm")
DTYPES = ("float32", "bfloat16")
DECODE_LOOPS = ("dpbench", "transformers")


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

    @contextmanager
    def released(self) -> Iterator[None]:
        """Lend the generator's accelerator memory to other work (e.g. DPO training another
        copy of the model) for the ``with`` block; no generation inside. Default: a no-op."""
        yield

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


def make_generator(backend: str, model: str, *, max_lora_rank: int | None = None, **kwargs) -> Generator:
    """A generator of ``backend`` (``transformers`` or ``vllm``) for model ``model``.
    ``max_lora_rank``: the largest rank of the LoRA adapters it will be asked to apply (vLLM
    reserves memory for that rank; ``None``: no adapters); transformers applies any rank."""
    check_choice("backend", backend, BACKENDS)
    if backend == "vllm":
        for name in ("batch_size", "device", "decode_loop"):  # transformers-only settings
            kwargs.pop(name, None)
        return VLLMGenerator(model, max_lora_rank=max_lora_rank, **kwargs)
    return TransformersGenerator(model, **kwargs)


# transformers ---------------------------------------------------------------------------------

class TransformersGenerator(Generator):
    """A transformers model, decoded in batches by dpbench's loop (``decode_loop="dpbench"``,
    Llama-family models: prompts sorted by length, each distinct prompt prefilled once; see
    ``dpbench.models.decoding``) or by ``model.generate`` (``"transformers"``: any model,
    and the reference the loop is tested against). Other architectures fall back to
    ``model.generate``. Every token is drawn by a ``NucleusSampler`` seeded per batch from the
    call's seed.

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
        decode_loop: str = "dpbench",
    ):
        from dpbench.models.resolve import load_causal_lm, load_tokenizer

        check_choice("dtype", dtype, DTYPES)
        check_int("batch_size", batch_size, minimum=1)
        check_choice("decode_loop", decode_loop, DECODE_LOOPS)
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
        self.decode_loop = decode_loop
        self._adapters: dict[str, str] = {}  # adapter key -> PEFT adapter name
        self._owns_peft = False

    def generate(self, prompts, params, *, seed, adapter=None):
        import torch

        from dpbench.models.decoding import unsupported

        prompts = list(prompts)
        if not prompts:
            return []
        model = self._select_adapter(adapter)
        ids = [self.prompt_ids(p) for p in prompts]
        own_loop = self.decode_loop == "dpbench" and unsupported(model) is None
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), ids[i])) if own_loop else list(range(len(ids)))
        out: list[str] = [""] * len(prompts)
        context = model.disable_adapter() if (adapter is None and self._owns_peft) else nullcontext()
        with torch.inference_mode(), context:
            decode = self._decoder(model, params) if own_loop else self._generate_batch(model, params)
            for b in range(math.ceil(len(ids) / self.batch_size)):
                chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
                sampler = None if params.temperature == 0 else NucleusSampler(
                    temperature=params.temperature, top_p=params.top_p,
                    generator=torch.Generator(device=self.device).manual_seed(request_seed(seed, b)))
                for i, text in zip(chunk, decode([ids[i] for i in chunk], sampler), strict=True):
                    out[i] = cut_at_stop(text, params.stop)
        return out

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _decoder(self, model, params):
        """Batches through dpbench's loop: prompt ids and a sampler (None: greedy) -> texts."""
        from dpbench.models.decoding import LlamaDecoder

        decoder, tok = LlamaDecoder(model), self.tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
            else tok.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos)

        def finished(rows, tokens):
            texts = tok.batch_decode(tokens, skip_special_tokens=True)
            return [r for r, text in zip(rows, texts, strict=True) if any(s in text for s in params.stop)]

        def decode(chunk, sampler):
            draw = sampler.tokens if sampler is not None else _greedy
            new = decoder.decode(chunk, max_new_tokens=params.max_new_tokens, eos_ids=eos_ids, draw=draw,
                                 finished=finished if params.stop else None)
            return tok.batch_decode(new, skip_special_tokens=True)

        return decode

    def _generate_batch(self, model, params):
        """Batches through ``model.generate`` (left padding; greedy over the sampler's
        one-hot choice): prompt ids and a sampler (None: greedy) -> texts."""
        from dpbench.models.decoding import left_padded

        tok, pad_id = self.tokenizer, self._pad_id()
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": pad_id,
                                  "do_sample": False}
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)

        def decode(chunk, sampler):
            input_ids, mask = left_padded(chunk, pad_id, device=self.device)
            processors = {} if sampler is None else {"logits_processor": _logits_processors(sampler)}
            generated = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs, **processors)
            return tok.batch_decode(generated[:, input_ids.shape[1]:], skip_special_tokens=True)

        return decode

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
    (``_draw``, by blocks of ``block`` tokens) instead of an exponential draw for every token."""

    def __init__(self, *, temperature: float, top_p: float, generator, candidates: int = 1024, block: int = 1024):
        check_positive("temperature", temperature)
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ConfigError("top_p", top_p, "a number in (0, 1]")
        check_int("candidates", candidates, minimum=1)
        check_int("block", block, minimum=1)
        self.temperature, self.top_p, self.generator = temperature, top_p, generator
        self.candidates, self.block = candidates, block

    def __call__(self, input_ids, scores):
        """transformers' logits-processor form: scores with only the drawn token finite."""
        import torch

        chosen = torch.full_like(scores, -math.inf)
        return chosen.scatter_(-1, self.tokens(scores).view(-1, 1), 0.0)

    def tokens(self, scores):
        """One drawn token per row of ``scores`` (logits)."""
        import torch

        probs = torch.softmax(scores if self.temperature == 1 else scores.float() / self.temperature, dim=-1,
                              dtype=torch.float32)
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
        return tokens.view(-1)

    def _nucleus(self, values):
        """Descending probabilities with every token outside the nucleus set to 0."""
        import torch

        above = values.cumsum(dim=-1) - values  # mass of the tokens ranked above each one
        return torch.where(above < self.top_p, values, torch.zeros_like(values))

    def _draw(self, weights):
        """One index per row, with probability proportional to ``weights``: inverse CDF in
        float64, in two levels (the block of ``block`` tokens, then the token within it), so
        only block sums (each summed in float32, exact to ~1e-7) and one block per row are
        accumulated, not the whole vocabulary. A zero weight is never drawn."""
        import torch

        rows, size = weights.shape
        block = min(self.block, size)
        blocks = -(-size // block)
        padded = weights if size % block == 0 else torch.nn.functional.pad(weights, (0, blocks * block - size))
        padded = padded.view(rows, blocks, block)
        sums = padded.sum(-1).double()  # 8x cheaper than summing in float64
        cumulative = sums.cumsum(-1)
        u = torch.rand(rows, 1, generator=self.generator, dtype=torch.float64,
                       device=weights.device) * cumulative[:, -1:]
        chosen = torch.minimum(torch.searchsorted(cumulative, u, right=True), _last_positive(sums))
        before = torch.where(chosen > 0, cumulative.gather(-1, (chosen - 1).clamp_min(0)), 0.0)
        inside = padded[torch.arange(rows, device=weights.device), chosen.view(-1)]
        index = torch.minimum(torch.searchsorted(inside.double().cumsum(-1), u - before, right=True),
                              _last_positive(inside))
        return (chosen * block + index).clamp_max(size - 1)  # a row without positive weight (NaN) stays in range


def _last_positive(weights):
    """Each row's last index with a positive weight, ``[rows, 1]``."""
    return weights.shape[-1] - 1 - (weights.flip(-1) > 0).int().argmax(dim=-1, keepdim=True)


def _greedy(logits):
    return logits.argmax(dim=-1)


def _logits_processors(*processors):
    from transformers import LogitsProcessorList

    return LogitsProcessorList(processors)


# vLLM -------------------------------------------------------------------------------------------

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""the ``max_lora_rank`` values vLLM accepts (``vllm.config.lora.MaxLoRARanks``, v0.33.0)"""


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that serves adapters of rank ``rank``."""
    check_int("max_lora_rank", rank, minimum=1)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ConfigError("max_lora_rank", rank, f"at most {VLLM_LORA_RANKS[-1]} (vLLM's largest LoRA rank)")


class VLLMGenerator(Generator):
    """vLLM engine (CUDA). ``vllm`` is imported here, never at module import.

    LoRA adapters are served with ``LoRARequest``, never merged into a checkpoint, up to rank
    ``max_lora_rank`` (rounded up to a rank vLLM accepts; ``None``: LoRA off). ``sleep_mode``
    builds the engine with vLLM's sleep mode, so that ``released()`` can move its weights to CPU
    memory and drop its KV cache while other work needs the GPU. Extra keyword arguments go to
    ``vllm.LLM`` (e.g. ``max_model_len``).
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "bfloat16",
        seed: int = 0,
        max_lora_rank: int | None = None,
        gpu_memory_utilization: float = 0.85,
        sleep_mode: bool = True,
        tokenizer=None,
        **engine_kwargs,
    ):
        from dpbench.models.resolve import load_tokenizer, resolve_model

        check_choice("dtype", dtype, DTYPES)
        self.max_lora_rank = None if max_lora_rank is None else vllm_lora_rank(max_lora_rank)
        try:
            import vllm
        except ImportError:
            raise ConfigError(
                "backend", "vllm", "an installed vLLM (pip install 'dpbench[gpu]', CUDA only); or backend: transformers"
            ) from None
        self.name = model
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        self._vllm = vllm
        lora = {} if self.max_lora_rank is None else {"enable_lora": True, "max_lora_rank": self.max_lora_rank}
        self.sleep_mode = bool(sleep_mode)
        self.llm = vllm.LLM(
            model=resolve_model(model),
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=self.sleep_mode,
            **lora,
            **engine_kwargs,
        )
        self._lora_ids: dict[str, int] = {}

    def generate(self, prompts, params, *, seed, adapter=None):
        prompts = list(prompts)
        if not prompts:
            return []
        lora = self._lora_request(adapter)
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
        outputs = self.llm.generate(inputs, sampling_params=sampling, lora_request=lora, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, params.stop) for o in outputs]

    @contextmanager
    def released(self):
        """vLLM's level-1 sleep for the block: weights (and LoRA slots) to CPU memory, KV cache
        dropped; woken with the same weights after the block, once this process's CUDA cache is
        freed for the engine. Without ``sleep_mode`` a no-op (the engine keeps its memory)."""
        if not self.sleep_mode:
            yield
            return
        self.llm.sleep(level=1)
        try:
            yield
        finally:
            _free_cuda_cache()
            self.llm.wake_up()

    def _lora_request(self, adapter):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = Path(adapter).expanduser().resolve()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError("adapter", str(adapter), "a PEFT adapter folder (with adapter_config.json)")
        if self.max_lora_rank is None:
            raise ConfigError("adapter", str(adapter), "none: this generator was built without LoRA "
                              "(max_lora_rank None)")
        rank = _adapter_rank(path)
        if rank > self.max_lora_rank:
            raise ConfigError("adapter", str(adapter), f"a LoRA adapter of rank <= {self.max_lora_rank} (it has rank "
                              f"{rank}): build the generator with max_lora_rank >= {rank}")
        stamp = sum(p.stat().st_mtime_ns for p in path.iterdir() if p.is_file())
        key = f"{path}:{stamp}"  # a rewritten adapter folder gets a fresh id (vLLM caches by id)
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        lora_id = self._lora_ids[key]
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(path))

    def close(self) -> None:
        self.llm = None
        _free_cuda_cache()


def _adapter_rank(path: Path) -> int:
    """The largest rank of a PEFT LoRA adapter (``r`` or any ``rank_pattern`` entry)."""
    import json

    config = json.loads((path / "adapter_config.json").read_text())
    return max([int(config.get("r", 0)), *map(int, (config.get("rank_pattern") or {}).values())])


def _free_cuda_cache() -> None:
    """Collect garbage and return this process's cached CUDA memory to the driver (vLLM's
    engine runs in another process and cannot use it)."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
