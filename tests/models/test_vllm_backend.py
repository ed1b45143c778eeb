"""The vLLM backend against ``dpbench.testing.fake_vllm`` (vLLM's offline API on a tiny
transformers model): same token ids and greedy texts as the transformers backend, seeded
sampling, LoRA ranks, sleep mode around DPO, and the checks that refuse vLLM or CUDA on a
machine without them."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import pytest

from dpbench.api import Method, hookimpl
from dpbench.errors import ConfigError
from dpbench.models import SamplingParams, TransformersGenerator, VLLMGenerator, make_generator
from dpbench.models.generation import vllm_lora_rank
from dpbench.testing import fake_vllm

PROMPTS = ["the cat sat", "the dog ran on", [{"role": "user", "content": "write one line"}], "number"]
GREEDY = SamplingParams(temperature=0, max_new_tokens=10)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)


@pytest.fixture
def vllm():
    with fake_vllm.installed() as module:
        yield module


@pytest.fixture(scope="module")
def hf(tiny_lm_dir):
    return TransformersGenerator(str(tiny_lm_dir), batch_size=3)


def make_adapter(model_dir, folder, rank: int):
    """A random LoRA adapter of rank ``rank`` on the attention and MLP projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(rank)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                        target_modules=["q_proj", "v_proj", "up_proj"])
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rank32_adapter(tiny_lm_dir, tmp_path_factory):
    return make_adapter(tiny_lm_dir, tmp_path_factory.mktemp("rank32"), 32)


def spy(engine) -> list:
    """Every ``generate`` call's prompts and sampling params on ``engine``."""
    calls, original = [], engine.generate

    def generate(prompts, sampling_params=None, **kwargs):
        calls.append({"prompts": prompts, "params": sampling_params, **kwargs})
        return original(prompts, sampling_params, **kwargs)

    engine.generate = generate
    return calls


# the fake refuses what vLLM refuses -----------------------------------------------------------

def test_fake_refuses_what_vllm_refuses(vllm, tiny_lm_dir, rank32_adapter):
    with pytest.raises(TypeError, match="swap_space"):  # an LLM argument vLLM 0.33 no longer has
        vllm.LLM(model=str(tiny_lm_dir), swap_space=4)
    with pytest.raises(TypeError, match="max_new_tokens"):
        vllm.SamplingParams(max_new_tokens=5)
    with pytest.raises(ValueError, match="temperature"):
        vllm.SamplingParams(temperature=2.5)
    with pytest.raises(ValueError, match="max_lora_rank"):
        vllm.LLM(model=str(tiny_lm_dir), enable_lora=True, max_lora_rank=24)
    llm = vllm.LLM(model=str(tiny_lm_dir))
    prompt = [{"prompt_token_ids": [5, 6, 7]}]
    lora = fake_vllm.LoRARequest("a", 1, str(rank32_adapter))
    with pytest.raises(ValueError, match="LoRA is not enabled"):
        llm.generate(prompt, vllm.SamplingParams(max_tokens=2), lora_request=lora)
    with pytest.raises(RuntimeError, match="enable_sleep_mode"):
        llm.sleep(level=1)
    small = vllm.LLM(model=str(tiny_lm_dir), enable_lora=True, max_lora_rank=16, enable_sleep_mode=True)
    with pytest.raises(ValueError, match="LoRA rank 32 is greater than max_lora_rank 16"):
        small.generate(prompt, vllm.SamplingParams(max_tokens=2), lora_request=lora)
    small.sleep(level=1)
    with pytest.raises(RuntimeError, match="asleep"):
        small.generate(prompt, vllm.SamplingParams(max_tokens=2))
    assert small.wake_up() is True
    assert len(small.generate(prompt, vllm.SamplingParams(max_tokens=2))[0].outputs[0].token_ids) == 2


# same prompts and texts as the transformers backend --------------------------------------------

def test_same_prompt_ids_and_greedy_texts_as_transformers(vllm, tiny_lm_dir, tiny_adapter_dir, hf):
    gen = make_generator("vllm", str(tiny_lm_dir), dtype="float32", batch_size=99, device="cpu")
    assert gen.llm.kwargs["model"] == str(tiny_lm_dir) and "enable_lora" not in gen.llm.kwargs
    calls = spy(gen.llm)
    assert gen.generate(PROMPTS, GREEDY, seed=0) == hf.generate(PROMPTS, GREEDY, seed=0)
    assert [p["prompt_token_ids"] for p in calls[-1]["prompts"]] == [hf.prompt_ids(p) for p in PROMPTS]
    free = gen.generate(["the"], GREEDY, seed=0)[0]
    stop = SamplingParams(temperature=0, max_new_tokens=10, stop=(free[2:4],))
    assert gen.generate(["the"], stop, seed=0) == hf.generate(["the"], stop, seed=0) == [free[:2]]
    with pytest.raises(ConfigError, match="built without LoRA"):
        gen.generate(PROMPTS, GREEDY, seed=0, adapter=tiny_adapter_dir)


def test_lora_adapter_served_unmerged_matches_transformers_peft(vllm, tiny_lm_dir, tiny_adapter_dir, hf):
    gen = VLLMGenerator(str(tiny_lm_dir), dtype="float32", max_lora_rank=4)
    assert gen.llm.kwargs["enable_lora"] is True and gen.llm.kwargs["max_lora_rank"] == 8  # 4 rounded up
    calls = spy(gen.llm)
    base = gen.generate(PROMPTS, GREEDY, seed=0)
    adapted = gen.generate(PROMPTS, GREEDY, seed=0, adapter=tiny_adapter_dir)
    assert adapted != base and adapted == hf.generate(PROMPTS, GREEDY, seed=0, adapter=tiny_adapter_dir)
    assert calls[-1]["lora_request"].lora_path == str(tiny_adapter_dir.resolve())
    assert gen.generate(PROMPTS, GREEDY, seed=0) == base and calls[-1]["lora_request"] is None
    gen.generate(PROMPTS, GREEDY, seed=0, adapter=tiny_adapter_dir)
    assert calls[-1]["lora_request"].lora_int_id == 1  # same adapter files, same id


def test_seeded_sampling_is_reproducible_per_request(vllm, tiny_lm_dir):
    gen = VLLMGenerator(str(tiny_lm_dir), dtype="float32")
    calls = spy(gen.llm)
    first = gen.generate(PROMPTS, SAMPLED, seed=7)
    assert gen.generate(PROMPTS, SAMPLED, seed=7) == first != gen.generate(PROMPTS, SAMPLED, seed=8)
    assert gen.generate(PROMPTS[:2], SAMPLED, seed=7) == first[:2]  # one seed per request, not per batch
    params = calls[0]["params"]
    assert len({p.seed for p in params}) == len(PROMPTS)
    assert (params[0].temperature, params[0].top_p, params[0].max_tokens) == (1.0, 0.9, 8)
    assert gen.generate([], SAMPLED, seed=7) == []


# LoRA ranks ------------------------------------------------------------------------------------

def test_vllm_lora_ranks_round_up():
    assert [vllm_lora_rank(r) for r in (1, 2, 8, 16, 17, 32, 33, 300, 512)] == [1, 8, 8, 16, 32, 32, 64, 320, 512]
    with pytest.raises(ConfigError, match="max_lora_rank"):
        vllm_lora_rank(513)


def test_a_rank_32_adapter_is_served_when_the_method_asks_for_rank_32(vllm, tiny_lm_dir, rank32_adapter, hf):
    from dpbench.synthetic.options import GeneratorOptions

    options = GeneratorOptions(model=str(tiny_lm_dir), backend="vllm")
    gen = options.generator("cpu", max_lora_rank=32)
    assert gen.llm.kwargs["max_lora_rank"] == 32
    assert gen.generate(PROMPTS, GREEDY, seed=0, adapter=rank32_adapter) == hf.generate(
        PROMPTS, GREEDY, seed=0, adapter=rank32_adapter)
    small = options.generator("cpu", max_lora_rank=16)  # vLLM's default: refused, before the engine sees it
    with pytest.raises(ConfigError, match="rank <= 16 .it has rank 32"):
        small.generate(PROMPTS, GREEDY, seed=0, adapter=rank32_adapter)


def test_popri_builds_its_generator_for_its_lora_rank(vllm, tiny_lm_dir):
    config = pytest.importorskip("dpbench_popri.config")
    gen = config.PopriOptions(model=str(tiny_lm_dir), backend="vllm", lora_r=24).generator("cpu")
    assert gen.llm.kwargs["max_lora_rank"] == 32


def test_temperature_above_vllms_range_is_refused_at_validation():
    from dpbench.synthetic.options import GeneratorOptions

    assert GeneratorOptions(temperature=2.5).temperature == 2.5  # transformers samples at any temperature
    with pytest.raises(ConfigError, match="temperature"):
        GeneratorOptions(backend="vllm", temperature=2.5)


# sleep mode around DPO -------------------------------------------------------------------------

def test_released_sleeps_the_engine_and_wakes_it_with_the_same_weights(vllm, tiny_lm_dir):
    gen = VLLMGenerator(str(tiny_lm_dir), dtype="float32")
    assert gen.llm.kwargs["enable_sleep_mode"] is True
    before = gen.generate(PROMPTS, GREEDY, seed=0)

    def fake_dpo_step():
        assert gen.llm.sleeping  # the GPU is free for DPO's own copy of the model
        with pytest.raises(RuntimeError, match="asleep"):
            gen.generate(PROMPTS, GREEDY, seed=0)

    with gen.released():
        fake_dpo_step()
    assert gen.llm.events[-2:] == [("sleep", 1), ("wake_up", None)]
    assert gen.generate(PROMPTS, GREEDY, seed=0) == before
    with pytest.raises(KeyError), gen.released():  # a failing DPO step still wakes the engine
        raise KeyError("dpo failed")
    assert not gen.llm.sleeping


def test_released_is_a_no_op_without_sleep_mode(vllm, tiny_lm_dir, hf):
    gen = VLLMGenerator(str(tiny_lm_dir), dtype="float32", sleep_mode=False)
    with gen.released():
        assert not gen.llm.sleeping
    assert not any(event[0] == "sleep" for event in gen.llm.events)
    with hf.released():  # transformers: nothing to release
        pass


@pytest.fixture
def popri_plugin():
    """The POPri plugin registered for one test (skipped where it is not installed)."""
    popri = pytest.importorskip("dpbench_popri")
    from dpbench.plugins import load_plugins, pm, registered

    load_plugins()
    if pm.get_plugin("popri") is not None:
        yield
        return
    with registered(popri, name="popri"):
        yield


def test_popri_sleeps_vllm_during_each_dpo_round(vllm, monkeypatch, tmp_path, tiny_llama, hashing_embedder,
                                                 toy_plugin, popri_plugin):
    from dpbench.runner import Runner
    from dpbench.suite import load_suite

    engines = []

    class RecordedLLM(fake_vllm.LLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engines.append(self)

    monkeypatch.setattr(vllm, "LLM", RecordedLLM)
    suite_file = tmp_path / "popri_vllm.yaml"
    suite_file.write_text(f"""
seeds: [0]
privacy: {{epsilon: 4, delta: 1e-5, accountant: rdp}}
datasets: {{toy_texts: {{num_clients: 12}}}}
methods:
  popri: {{model: {tiny_llama}, backend: vllm, rounds: 2, prompts_per_round: 4, samples_per_prompt: 3,
          reject_rank: 2, max_new_tokens: 8, truncate_tokens: 8, final_samples: 6, pairs_per_step: 2,
          lora_r: 32, lora_alpha: 32, max_length: 128}}
evaluators: {{next_word: {{}}}}
""")
    suite = load_suite(suite_file, runs_dir=tmp_path / "runs")
    report = Runner(suite).run()
    assert not report.failed, report.failed
    (engine,) = engines
    assert engine.kwargs["max_lora_rank"] == 32 and engine.kwargs["enable_sleep_mode"] is True
    kinds = [(e[0], e[1]) for e in engine.events]
    # round 0 samples the base, sleeps for DPO, round 1 samples round 0's rank-32 adapter, ...
    assert kinds == [("generate", []), ("sleep", 1), ("wake_up", None), ("generate", [1]), ("sleep", 1),
                     ("wake_up", None), ("generate", [2]), ("generate", [2])]


# refusing what the machine cannot run ----------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    backend: str = "transformers"


class _Generating(Method):
    """A method with a ``backend`` option, for the machine checks (it never runs)."""

    config_class = _Options

    def run(self, data, ctx):
        raise AssertionError("not run")


class _GeneratingPlugin:
    @hookimpl
    def register_methods(self, register):
        register("generating", _Generating)


@pytest.fixture
def machine_suite(toy_plugin, toy_suite):
    from dpbench.plugins import registered

    with registered(_GeneratingPlugin(), name="generating-test"):
        yield toy_suite("""
            seeds: 1
            privacy: {epsilon: 1, delta: 1e-5, accountant: rdp}
            datasets: {toy_texts: {num_clients: 20}}
            methods: {public_only: {}, generating: {}}
            evaluators: {next_word: {}}
            """)


@pytest.mark.parametrize("overrides, cuda, vllm_importable, message", [
    (["device=cuda"], False, True, "device: 'cuda' is not allowed; expected cpu or auto"),
    (["methods.generating.backend=vllm"], True, True, "methods.generating.backend: 'vllm' is not allowed; "
                                                         "expected transformers with device: cpu"),
    (["methods.generating.backend=vllm", "device=auto"], False, True, "vLLM needs a CUDA GPU"),
    (["methods.generating.backend=vllm", "device=cuda"], True, False, "import vllm failed"),
    (["methods.generating.backend=vllm", "device=cuda"], True, True, None),
    (["device=auto"], False, False, None),
], ids=["cuda without GPU", "vllm on cpu", "vllm without GPU", "vllm not installed", "vllm on GPU", "cpu"])
def test_validate_and_run_refuse_what_this_machine_cannot_run(machine_suite, monkeypatch, overrides, cuda,
                                                              vllm_importable, message):
    import torch
    from click.testing import CliRunner

    from dpbench.cli import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if not vllm_importable:
        monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    with fake_vllm.installed() if vllm_importable else contextlib.nullcontext():
        for command in (["validate", "--no-data"], ["run", "--dry-run"]):
            out = CliRunner().invoke(cli, [*command, str(machine_suite), *overrides])
            if message is None:
                assert out.exit_code == 0, out.output
            else:
                assert out.exit_code == 2 and message in out.output, out.output
                assert "Traceback" not in out.output


def test_cpu_suites_are_checked_without_asking_for_cuda(machine_suite, monkeypatch):
    import dpbench.suite
    from dpbench.suite import check_machine, load_suite

    monkeypatch.setattr(dpbench.suite, "_cuda_available", lambda: pytest.fail("torch imported for a CPU suite"))
    check_machine(load_suite(machine_suite))


def test_vllm_missing_is_a_clear_error(tiny_lm_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    with pytest.raises(ConfigError, match="vLLM"):
        VLLMGenerator(str(tiny_lm_dir))
