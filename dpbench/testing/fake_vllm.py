"""A CPU stand-in for the part of vLLM's offline API that dpbench uses, so the vLLM backend runs
in tests without a GPU: ``vllm.LLM`` (constructor, ``generate``, ``sleep``, ``wake_up``),
``vllm.SamplingParams`` and ``vllm.lora.request.LoRARequest``.

Texts are real: each request is decoded token by token with the transformers model at
``model`` (greedy at temperature 0, else temperature + top-p/top-k draws from a generator seeded
by the request's ``seed``), and LoRA adapters are applied with PEFT, unmerged. The fake is
strict where dpbench could go wrong, as vLLM v0.33.0 (commit 4ba787ec9, the names below are read
from its signatures) is: unknown ``LLM`` or ``SamplingParams`` keyword arguments are refused, a
``max_lora_rank`` outside vLLM's ranks, an adapter of higher rank, a ``lora_request`` without
``enable_lora``, and an adapter id serves the weights first loaded under it. Stricter than vLLM,
to catch what would fail silently on a GPU: ``sleep`` without ``enable_sleep_mode`` (vLLM then
frees nothing), ``generate`` while asleep, and generating after a level-2 sleep (weights gone).
The fake behaves as if on a CUDA machine.

Use ``with fake_vllm.installed(): ...`` to make ``import vllm`` find it.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = "0.33.0"

LLM_KWARGS = frozenset("""
_api_process_count _api_process_rank additional_config aggregate_engine_logging all2all_backend
allow_deprecated_quantization allowed_local_media_path allowed_media_domains async_scheduling attention_backend
attention_config aux_output_config block_size chat_template code_revision collect_detailed_traces
compilation_config config_format convert cp_kv_cache_interleave_size cpu_distributed_timeout_seconds
cpu_offload_gb cpu_offload_params cudagraph_capture_sizes cudagraph_metrics custom_histogram_buckets
data_parallel_address data_parallel_backend data_parallel_external_lb data_parallel_hybrid_lb
data_parallel_multi_port_external_lb data_parallel_rank data_parallel_rpc_port data_parallel_size
data_parallel_size_local data_parallel_start_rank dbo_decode_token_threshold dbo_prefill_token_threshold
dcp_comm_backend dcp_kv_cache_interleave_size dcp_q_replicate decode_context_parallel_size default_mm_loras
device_ids diffusion_config disable_cascade_attn disable_chunked_mm_input disable_custom_all_reduce
disable_hybrid_kv_cache_manager disable_log_stats disable_nccl_for_dp_synchronization disable_sliding_window
distributed_executor_backend distributed_timeout_seconds download_dir dp_sync_interval dtype ec_manager_config
ec_transfer_config elastic_ep_max_dp_size enable_batch_sharded_sampling enable_chunked_prefill
enable_cumem_allocator enable_dbo enable_elastic_ep enable_ep_weight_filter enable_eplb enable_expert_parallel
enable_fault_tolerance enable_flashinfer_autotune enable_hc_sp enable_layerwise_nvtx_tracing
enable_logging_iteration_details enable_lora enable_mamba_cache_stochastic_rounding
enable_mamba_shared_prefix_checkpoint enable_mfu_metrics enable_mixed_moe_lora_format enable_mm_embeds
enable_mm_processor_stats enable_moe_shared_loras enable_nccl_comm_suspend enable_prefix_caching
enable_prompt_embeds enable_return_routed_experts enable_shm_tensor_arena enable_sleep_mode
enable_tower_connector_lora enable_trace_replay enforce_eager engram_config eplb_config expert_placement_strategy
fail_on_environ_validation fault_tolerance_config fully_sharded_loras gdn_prefill_backend generation_config
gpu_memory_utilization hf_config_path hf_overrides hf_token ignore_patterns interleave_mm_strings
io_processor_plugin ir_op_priority jit_monitor_mode jit_monitor_verbose kda_decode_backend kda_prefill_backend
kernel_config kv_cache_dtype kv_cache_dtype_skip_layers kv_cache_memory_bytes kv_cache_metrics
kv_cache_metrics_sample kv_events_config kv_offloading_backend kv_offloading_size kv_sharing_fast_prefill
kv_transfer_config language_model_only limit_mm_per_prompt linear_backend load_format log_config_file log_level
logging_config logits_processors logprobs_mode long_prefill_token_threshold long_prefill_token_threshold_adaptive
lora_dtype lora_target_modules mamba_backend mamba_block_size mamba_cache_dtype mamba_cache_mode
mamba_cache_philox_rounds mamba_config mamba_ssm_cache_dtype mamba_ssu_algorithm master_addr master_port
max_cpu_loras max_cudagraph_capture_size max_logprobs max_lora_cls_labels max_lora_rank max_loras max_model_len
max_num_active_seqs max_num_batched_tokens max_num_queued_reqs max_num_queued_tokens max_num_scheduled_tokens
max_num_seqs max_parallel_loading_workers media_io_kwargs mm_device_do_normalize mm_encoder_attn_backend
mm_encoder_attn_dtype mm_encoder_fp8_scale_path mm_encoder_fp8_scale_save_margin mm_encoder_fp8_scale_save_path
mm_encoder_only mm_encoder_tp_mode mm_hasher_algorithm mm_ipc_gpu_memory_gb mm_processor_cache_gb
mm_processor_cache_type mm_processor_device mm_processor_kwargs mm_shm_cache_max_object_size_mb mm_tensor_ipc
model model_class_overrides model_impl model_loader_extra_config model_weights moe_backend monokernel nnodes
node_rank num_gpu_blocks_override numa_bind numa_bind_cpus numa_bind_nodes offload_backend offload_group_size
offload_num_in_group offload_params offload_prefetch_step optimization_level otlp_traces_endpoint
override_generation_config per_request_spec_decode_metrics performance_mode pipeline_parallel_size
pooler_config prefill_context_parallel_size prefill_schedule_interval prefix_cache_retention_interval
prefix_caching_hash_algo prefix_match_unit profiler_config pt_load_map_location quantization quantization_config
ray_workers_use_nsight reasoning_config reasoning_parser reasoning_parser_plugin renderer_num_workers
replayssm_buffer_len return_sampling_mask revision runner safetensors_load_strategy
safetensors_prefetch_block_size safetensors_prefetch_num_threads scheduler_cls scheduler_reserve_full_isl
scheduling_policy seed served_model_name show_hidden_metrics_for_version shutdown_timeout skip_mm_profiling
skip_tokenizer_init sleep_mode_backend sleep_mode_offload_cudagraph sleep_preserve_parameter_names
sparse_indexer_topk_backend spec_method spec_model spec_tokens specialize_active_lora speculative_config
stream_interval structured_outputs_config swa_bounded_replay tensor_parallel_size tokenizer tokenizer_mode
tokenizer_revision tokens_only trust_remote_code ubatch_size use_fp64_gumbel use_replayssm use_tqdm_on_load
video_pruning_method video_pruning_rate watchdog_config watermark watermark_config weight_transfer_config
worker_cls worker_extension_cls
""".split())
"""``LLM.__init__``'s parameters and the ``EngineArgs`` fields its ``**kwargs`` go to (v0.33.0);
anything else is a ``TypeError`` there"""

SAMPLING_DEFAULTS = {
    "n": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": None, "stop": None, "stop_token_ids": None,
    "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "detokenize": True, "skip_special_tokens": True,
    "include_stop_str_in_output": False,
}
"""the ``SamplingParams`` fields the fake implements, with vLLM's defaults"""
SAMPLING_UNMODELLED = frozenset("""
presence_penalty frequency_penalty repetition_penalty watermarking min_p logprobs prompt_logprobs
prompt_logprob_token_ids prompt_logprob_start logprob_token_ids flat_logprobs spaces_between_special_tokens
output_kind stream_interval skip_clone output_text_buffer_length structured_outputs logit_bias allowed_token_ids
extra_args bad_words skip_reading_prefix_cache thinking_token_budget repetition_detection
routed_experts_prompt_start trace_decode_token_ids
""".split())
"""the other public ``SamplingParams`` fields of v0.33.0: accepted by vLLM, refused here as not modelled"""
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""``vllm.config.lora.MaxLoRARanks``"""
MODEL_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
"""``vllm.config.model.ModelDType``"""


class SamplingParams:
    """``vllm.SamplingParams``: keyword arguments only, checked as vLLM checks them."""

    def __init__(self, **kwargs):
        for name in kwargs:
            if name in SAMPLING_UNMODELLED:
                raise NotImplementedError(f"SamplingParams({name}=...) is valid in vLLM but not modelled by the fake")
            if name not in SAMPLING_DEFAULTS:
                raise TypeError(f"Unexpected keyword argument '{name}'")  # msgspec.Struct's message
        self.__dict__.update({**SAMPLING_DEFAULTS, **kwargs})
        if 0 < self.temperature < 1e-2:
            self.temperature = 1e-2
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if any(not s for s in self.stop):
            raise ValueError("stop cannot contain an empty string.")
        if self.temperature < 1e-5:  # greedy
            self.top_p, self.top_k = 1.0, 0
            if self.n > 1:
                raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


@dataclass(eq=False)
class LoRARequest:
    """``vllm.lora.request.LoRARequest``; equal by ``lora_name`` as in vLLM."""

    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None
    load_inplace: bool = False
    is_3d_lora_weight: bool = False

    def __post_init__(self):
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"

    def __eq__(self, other):
        return isinstance(other, LoRARequest) and self.lora_name == other.lora_name

    def __hash__(self):
        return hash(self.lora_name)


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: LoRARequest | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool = True
    lora_request: LoRARequest | None = None
    metrics: Any = field(default=None, repr=False)


class LLM:
    """``vllm.LLM`` on the CPU. ``events`` records each ``generate`` (with its LoRA ids),
    ``sleep`` and ``wake_up`` call, for tests."""

    def __init__(self, model: str, **kwargs):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        unknown = sorted(set(kwargs) - LLM_KWARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'")
        self.kwargs = {"model": model, **kwargs}
        dtype = kwargs.get("dtype", "auto")
        if dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {MODEL_DTYPES}")
        if not 0 < kwargs.get("gpu_memory_utilization", 0.92) <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        self.enable_lora = bool(kwargs.get("enable_lora", False))
        self.max_lora_rank = kwargs.get("max_lora_rank", 16)
        if self.enable_lora and self.max_lora_rank not in MAX_LORA_RANKS:
            raise ValueError(f"max_lora_rank: input should be one of {MAX_LORA_RANKS}, got {self.max_lora_rank}")
        self.max_cpu_loras = kwargs.get("max_cpu_loras") or kwargs.get("max_loras", 1)
        self.enable_sleep_mode = bool(kwargs.get("enable_sleep_mode", False))
        torch_dtype = {"half": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16,
                       "float": torch.float32, "float32": torch.float32}.get(dtype, "auto")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs.get("tokenizer") or model)
        self.max_model_len = kwargs.get("max_model_len") or self.model.config.max_position_embeddings
        self.rng = torch.Generator().manual_seed(kwargs.get("seed", 0))
        self.loras: OrderedDict[int, str] = OrderedDict()  # lora_int_id -> PEFT adapter name, LRU first
        self.sleeping: set[str] = set()  # memory tags (or scheduling) still asleep; empty: awake
        self.weights_discarded = False
        self.events: list[tuple] = []

    def get_tokenizer(self):
        return self.tokenizer

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        if not self.enable_sleep_mode:
            raise RuntimeError("LLM.sleep() needs LLM(enable_sleep_mode=True); vLLM would free no memory")
        if level not in (0, 1, 2):
            raise ValueError(f"sleep level must be 0, 1 or 2, got {level}")
        self.events.append(("sleep", level))
        self.sleeping |= {"scheduling"} if level == 0 else {"weights", "kv_cache"}
        self.weights_discarded = self.weights_discarded or level == 2

    def wake_up(self, tags: list[str] | None = None) -> bool:
        if tags is not None and not set(tags) <= {"weights", "kv_cache", "scheduling"}:
            raise ValueError(f"wake_up tags must be among weights, kv_cache, scheduling; got {tags}")
        self.events.append(("wake_up", tags))
        self.sleeping -= set(tags) if tags is not None else self.sleeping
        return not self.sleeping

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:
        import torch

        if self.sleeping:
            raise RuntimeError("LLM.generate() while the engine is asleep; call wake_up() first")
        if self.weights_discarded:
            raise RuntimeError("LLM.generate() after sleep(level=2): the weights were discarded, not reloaded")
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        params = sampling_params if sampling_params is not None else SamplingParams()
        params = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        loras = list(lora_request) if isinstance(lora_request, Sequence) else [lora_request] * len(prompts)
        if len(params) != len(prompts) or len(loras) != len(prompts):
            raise ValueError("sampling_params and lora_request lists must have one entry per prompt")
        self.events.append(("generate", sorted({lora.lora_int_id for lora in loras if lora is not None})))
        outputs, threads = [], torch.get_num_threads()
        torch.set_num_threads(1)  # one token of a tiny model at a time: threads only wait on each other
        try:
            with torch.inference_mode():
                for i, (prompt, param, lora) in enumerate(zip(prompts, params, loras, strict=True)):
                    ids = self._prompt_ids(prompt)
                    completions = [self._complete(ids, param, lora, index=k) for k in range(param.n)]
                    text = prompt.get("prompt") if isinstance(prompt, dict) else prompt
                    outputs.append(RequestOutput(str(i), text, ids, None, completions, lora_request=lora))
        finally:
            torch.set_num_threads(threads)
        return outputs

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if "prompt_token_ids" in prompt:
            ids = list(prompt["prompt_token_ids"])
        else:
            ids = list(self.tokenizer(prompt["prompt"])["input_ids"])
        if not all(isinstance(t, int) and 0 <= t < self.model.config.vocab_size for t in ids):
            raise ValueError("prompt_token_ids must be token ids of the model's vocabulary")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"The prompt is {len(ids)} tokens; max_model_len is {self.max_model_len}")
        return ids

    def _complete(self, ids, params: SamplingParams, lora: LoRARequest | None, *, index: int) -> CompletionOutput:
        import torch

        model = self._model_for(lora)
        rng = torch.Generator().manual_seed(params.seed) if params.seed is not None else self.rng
        eos = None if params.ignore_eos else self.tokenizer.eos_token_id
        budget = min(params.max_tokens or self.max_model_len, self.max_model_len - len(ids))
        out, finish, stop_reason, text = [], "length", None, ""
        for _ in range(budget):  # the whole sequence each step: slow, but only tiny models come here
            logits = model(input_ids=torch.tensor([ids + out]), use_cache=False).logits[0, -1]
            token = self._pick(logits.float(), params, rng)
            out.append(token)
            text = self.tokenizer.decode(out, skip_special_tokens=params.skip_special_tokens)
            if len(out) >= params.min_tokens and (token == eos or token in params.stop_token_ids):
                finish, stop_reason = "stop", None if token == eos else token
                break
            hits = [(text.find(s), s) for s in params.stop if s in text]
            if hits and len(out) >= params.min_tokens:
                at, stop = min(hits)
                text = text[: at + len(stop)] if params.include_stop_str_in_output else text[:at]
                finish, stop_reason = "stop", stop
                break
        return CompletionOutput(index, text if params.detokenize else "", out, finish_reason=finish,
                                stop_reason=stop_reason, lora_request=lora)

    @staticmethod
    def _pick(logits, params: SamplingParams, rng) -> int:
        import torch

        if params.temperature < 1e-5:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_k > 0:
            probs[probs < torch.topk(probs, min(params.top_k, len(probs))).values[-1]] = 0
        if params.top_p < 1:
            values, order = torch.sort(probs, descending=True)
            outside = values.cumsum(0) - values >= params.top_p  # mass above reaches top_p already
            probs[order[outside]] = 0
        return int(torch.multinomial(probs / probs.sum(), 1, generator=rng))

    def _model_for(self, lora: LoRARequest | None):
        """The model with ``lora``'s adapter active (loaded on first use of its id), or the base."""
        from peft import PeftModel

        if lora is None:
            if isinstance(self.model, PeftModel):
                return _Disabled(self.model)
            return self.model
        if not self.enable_lora:
            raise ValueError(f"Got lora_request {lora} but LoRA is not enabled!")
        if lora.lora_int_id not in self.loras or lora.load_inplace:
            self._load_lora(lora)
        self.loras.move_to_end(lora.lora_int_id)
        self.model.set_adapter(self.loras[lora.lora_int_id])
        return self.model

    def _load_lora(self, lora: LoRARequest) -> None:
        from peft import PeftModel

        config = json.loads((Path(lora.lora_path) / "adapter_config.json").read_text())
        rank = max([config["r"], *(config.get("rank_pattern") or {}).values()])
        if rank > self.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
        if config.get("bias", "none") != "none":
            raise ValueError("Adapter bias is not supported.")
        name = f"lora{lora.lora_int_id}"
        if isinstance(self.model, PeftModel):
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            self.model.load_adapter(lora.lora_path, adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, lora.lora_path, adapter_name=name)
        self.model.eval()
        self.loras[lora.lora_int_id] = name
        while len(self.loras) > self.max_cpu_loras:  # evict the least recently used adapter
            _, old = self.loras.popitem(last=False)
            self.model.set_adapter(name)
            self.model.delete_adapter(old)


class _Disabled:
    """A PEFT model called with its adapters off (vLLM's requests without ``lora_request``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        with self.model.disable_adapter():
            return self.model(**kwargs)


@contextmanager
def installed() -> Iterator[types.ModuleType]:
    """Make ``import vllm`` (and ``vllm.lora.request``) give this fake for the ``with`` block."""
    vllm, lora, request = (_module("vllm", package=True), _module("vllm.lora", package=True),
                           _module("vllm.lora.request"))
    vllm.__version__, vllm.LLM, vllm.SamplingParams = VERSION, LLM, SamplingParams
    request.LoRARequest = LoRARequest
    vllm.lora, lora.request = lora, request
    names = ("vllm", "vllm.lora", "vllm.lora.request")
    saved = {name: sys.modules.get(name, _MISSING) for name in names}
    sys.modules.update(zip(names, (vllm, lora, request), strict=True))
    try:
        yield vllm
    finally:
        for name, module in saved.items():
            if module is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _module(name: str, *, package: bool = False) -> types.ModuleType:
    """An empty module with a spec, so ``importlib.util.find_spec`` (trl asks) finds it."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    return module


_MISSING = object()
