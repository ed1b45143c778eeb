"""The shared generator options: validated, set flat in a suite beside a method's own."""

from dataclasses import dataclass

import pytest

import dpbench.synthetic.options as options
from dpbench.api import build_config, config_dict
from dpbench.errors import ConfigError
from dpbench.synthetic.options import GeneratorOptions


@dataclass(frozen=True)
class MethodOptions(GeneratorOptions):
    rounds: int = 2


def test_fields_are_checked_by_name():
    for field, value in [("backend", "llama.cpp"), ("prompt_style", "poem"), ("generation_batch_size", 0),
                         ("examples_per_prompt", 0), ("max_new_tokens", 0), ("truncate_tokens", 0),
                         ("temperature", -1.0), ("top_p", 0.0), ("bf16", "yes"),
                         ("strip_preambles", "yes")]:
        with pytest.raises(ConfigError, match=f"^{field}: "):
            GeneratorOptions(**{field: value})
    with pytest.raises(ConfigError, match="^methods.m.top_p: "):
        build_config(MethodOptions, {"top_p": 2}, where="methods.m")


def test_a_method_sets_them_flat_beside_its_own():
    config = build_config(MethodOptions, {"max_new_tokens": 8, "rounds": 5}, where="methods.m")
    plain = config_dict(config)
    assert plain["max_new_tokens"] == 8 and plain["rounds"] == 5 and plain["model"] == "smollm2-135m-instruct"


def test_generator_and_sampling_follow_the_options(monkeypatch):
    calls = []
    monkeypatch.setattr(options, "make_generator", lambda backend, model, **kw: calls.append((backend, model, kw)))
    GeneratorOptions(bf16=True, generation_batch_size=4, decode_loop="transformers").generator("cpu")
    assert calls == [("transformers", "smollm2-135m-instruct", {"dtype": "bfloat16", "batch_size": 4, "device": "cpu",
                                                                "max_lora_rank": None, "decode_loop": "transformers"})]
    params = GeneratorOptions(temperature=0.5, top_p=0.9, max_new_tokens=12).sampling(("\n",))
    assert (params.temperature, params.top_p, params.max_new_tokens, params.stop) == (0.5, 0.9, 12, ("\n",))


@pytest.mark.parametrize(("native", "dtype"), [(True, "bfloat16"), (False, "float32")])
def test_bf16_auto_generates_in_bf16_only_where_the_cpu_computes_it(monkeypatch, native, dtype):
    import dpbench.models.precision as precision

    calls = []
    monkeypatch.setattr(options, "make_generator", lambda backend, model, **kw: calls.append(kw["dtype"]))
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    GeneratorOptions().generator("cpu")
    GeneratorOptions(bf16=False).generator("cpu")
    assert calls == [dtype, "float32"]


def test_strip_preambles_reaches_every_completion_and_keeps_run_ids_while_off():
    class Generator:
        tokenizer = None

        def generate(self, prompts, params, *, seed, adapter):
            return ["Here's a revised version of the paragraph:\nWe  must act.", "We must act."]

    words = type("Words", (), {"__call__": lambda self, text, add_special_tokens=False: {"input_ids": text.split()}})
    Generator.tokenizer = words()
    assert GeneratorOptions().complete(Generator(), ["p", "q"], stop=(), seed=0) == [
        "Here's a revised version of the paragraph: We must act.", "We must act."]
    assert GeneratorOptions(strip_preambles=True).complete(Generator(), ["p", "q"], stop=(), seed=0) == [
        "We must act.", "We must act."]
    assert "strip_preambles" not in config_dict(GeneratorOptions())  # existing runs keep their ids and cache keys
    assert config_dict(GeneratorOptions(strip_preambles=True))["strip_preambles"] is True
