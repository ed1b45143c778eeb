"""Generation backends: transformers on a tiny model (vLLM: test_vllm_backend.py)."""

from __future__ import annotations

import math
import sys

import pytest

from dpbench.errors import ConfigError
from dpbench.models import SamplingParams, TransformersGenerator
from dpbench.models.generation import cut_at_stop, prompt_token_ids

PROMPTS = ["the cat sat", "the dog ran on", [{"role": "user", "content": "write one line"}], "number"]


@pytest.fixture(scope="module")
def generator(tiny_lm_dir):
    return TransformersGenerator(str(tiny_lm_dir), batch_size=3)


def test_sampling_params_checked():
    with pytest.raises(ConfigError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ConfigError, match="stop"):
        SamplingParams(stop="x")


def test_seeded_and_batched(generator):
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
    first = generator.generate(PROMPTS, params, seed=7)
    assert len(first) == len(PROMPTS) and all(isinstance(t, str) for t in first)
    assert generator.generate(PROMPTS, params, seed=7) == first
    assert generator.generate(PROMPTS, params, seed=8) != first
    assert generator.generate([], params, seed=7) == []


def _transformers_nucleus(logits, top_p):
    """transformers' own top-p warper: the probabilities it samples from."""
    import torch
    from transformers import TopPLogitsWarper

    return torch.softmax(TopPLogitsWarper(top_p=top_p)(None, logits.clone()), dim=-1)


@pytest.mark.parametrize("top_p, candidates, block", [(0.9, 4, 1024), (0.9, 64, 1024), (1.0, 64, 1024), (1.0, 64, 4)],
                         ids=["nucleus past the candidates", "nucleus within them", "whole vocabulary",
                              "whole vocabulary in blocks"])
def test_nucleus_sampler_draws_from_the_transformers_nucleus(top_p, candidates, block):
    """Same support and same frequencies as transformers' top-p sampling, whether or not a
    row's nucleus fits in the partially sorted candidates, at top-p 1, and when the draw goes
    through several blocks (the last one padded, one holding a token of probability 0)."""
    import torch

    from dpbench.models.generation import NucleusSampler

    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(0)) * torch.tensor([[0.3], [2.0], [5.0]])
    logits[:, 7] = -math.inf  # a token another processor ruled out (e.g. EOS before min_new_tokens)
    want = _transformers_nucleus(logits, top_p) if top_p < 1 else torch.softmax(logits, dim=-1)
    sampler = NucleusSampler(temperature=1.0, top_p=top_p, generator=torch.Generator().manual_seed(1),
                             candidates=candidates, block=block)
    draws = 20_000
    for row in range(3):
        scores = sampler(None, logits[row].repeat(draws, 1))
        assert torch.isinf(scores).sum(dim=-1).eq(29).all()  # one finite score: the draw
        tokens = scores.argmax(dim=-1)
        freq = torch.bincount(tokens, minlength=30).double() / draws
        assert set(tokens.tolist()) <= set(torch.nonzero(want[row]).flatten().tolist())
        assert torch.allclose(freq, want[row].double(), atol=0.015), (row, freq, want[row])


def test_nucleus_sampler_stays_in_the_vocabulary_on_rows_without_probability():
    """A row of NaN logits (no positive weight anywhere) still yields a token id of the
    vocabulary, also when the vocabulary is not a whole number of blocks."""
    import torch

    from dpbench.models.generation import NucleusSampler

    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(4))
    logits[1] = math.nan
    sampler = NucleusSampler(temperature=1.0, top_p=1.0, generator=torch.Generator().manual_seed(5), block=8)
    for _ in range(20):
        assert all(0 <= t < 30 for t in sampler.tokens(logits).tolist())


def test_nucleus_sampler_on_a_batch_mixing_small_and_large_nuclei():
    import torch

    from dpbench.models.generation import NucleusSampler

    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(2)) * torch.tensor(
        [[0.2], [6.0], [0.2], [6.0], [1.0], [3.0]])
    sampler = NucleusSampler(temperature=0.7, top_p=0.8, generator=torch.Generator().manual_seed(3), candidates=4)
    want = _transformers_nucleus(logits / 0.7, 0.8)
    for _ in range(200):
        tokens = sampler(None, logits).argmax(dim=-1)
        assert all(want[row, token] > 0 for row, token in enumerate(tokens.tolist()))
    with pytest.raises(ConfigError, match="top_p"):
        NucleusSampler(temperature=1.0, top_p=0.0, generator=None)


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_sampled_text_matches_the_transformers_sampler_in_distribution(generator, top_p):
    """Texts drawn through the nucleus sampler and through transformers' own sampler have the
    same mean log-likelihood under the model, within four standard errors."""
    import torch

    tok, model = generator.tokenizer, generator.model
    ids = prompt_token_ids(tok, "the cat sat")
    params = SamplingParams(temperature=1.0, top_p=top_p, max_new_tokens=12)
    texts = generator.generate(["the cat sat"] * 96, params, seed=3)
    ours = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    torch.manual_seed(3)
    with torch.inference_mode():
        native = model.generate(input_ids=torch.tensor([ids] * 96),
                                attention_mask=torch.ones(96, len(ids), dtype=torch.long), do_sample=True,
                                temperature=1.0, top_p=top_p, top_k=0, max_new_tokens=12,
                                pad_token_id=tok.pad_token_id)
    theirs = [tok(tok.decode(row[len(ids):], skip_special_tokens=True), add_special_tokens=False)["input_ids"]
              for row in native]

    def mean_log_likelihood(completions):
        scores = []
        with torch.inference_mode():
            for completion in completions:
                if not completion:
                    continue
                full = torch.tensor([ids + completion])
                logp = torch.log_softmax(model(full).logits[0, len(ids) - 1:-1].float(), dim=-1)
                scores.append(logp.gather(-1, torch.tensor(completion)[:, None]).mean().item())
        values = torch.tensor(scores)
        return values.mean().item(), (values.var() / len(values)).item()

    (a, var_a), (b, var_b) = mean_log_likelihood(ours), mean_log_likelihood(theirs)
    assert abs(a - b) < 4 * (var_a + var_b) ** 0.5, (a, b)


def test_chat_prompts_use_the_template(generator):
    ids = prompt_token_ids(generator.tokenizer, [{"role": "user", "content": "hi"}])
    text = generator.tokenizer.decode(ids)
    assert text.startswith("<|endoftext|>user: hi") and text.endswith("assistant:")


def test_stop_strings():
    assert cut_at_stop("one two. three", ["."]) == "one two"
    assert cut_at_stop("a\nb", ["\n", "b"]) == "a"
    assert cut_at_stop("plain", []) == "plain"


def test_stop_strings_in_generation(generator):
    free = generator.generate(["the"], SamplingParams(temperature=0, max_new_tokens=12), seed=0)[0]
    assert len(free) > 3
    stop = free[1:3]
    cut = generator.generate(["the"], SamplingParams(temperature=0, max_new_tokens=12, stop=(stop,)), seed=0)[0]
    assert stop not in cut and free.startswith(cut)


def test_lora_adapter_applied_without_merging(tiny_lm_dir, tiny_adapter_dir):
    import torch

    gen = TransformersGenerator(str(tiny_lm_dir), batch_size=4)
    greedy = SamplingParams(temperature=0, max_new_tokens=10)
    q_before = gen.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    base = gen.generate(PROMPTS, greedy, seed=0)
    adapted = gen.generate(PROMPTS, greedy, seed=0, adapter=tiny_adapter_dir)
    assert adapted != base
    assert any("lora_A" in n for n, _ in gen.model.named_modules())  # adapter layers present: not merged
    assert gen.generate(PROMPTS, greedy, seed=0) == base  # adapter off again
    assert gen.generate(PROMPTS, greedy, seed=0, adapter=tiny_adapter_dir) == adapted
    q_proj = gen.model.get_base_model().model.layers[0].self_attn.q_proj
    assert torch.equal(q_proj.base_layer.weight, q_before)  # base weights untouched


def test_bad_adapter_folder(generator, tmp_path):
    with pytest.raises(ConfigError, match="adapter"):
        generator.generate(["x"], SamplingParams(), seed=0, adapter=tmp_path)


def test_bf16_flag(tiny_lm_dir):
    import torch

    gen = TransformersGenerator(str(tiny_lm_dir), dtype="bfloat16")
    assert gen.model.dtype == torch.bfloat16
    assert len(gen.generate(["the cat"], SamplingParams(max_new_tokens=4), seed=0)) == 1


# vLLM: tests/models/test_vllm_backend.py, against dpbench.testing.fake_vllm ----------------------

def test_package_import_is_light():
    import subprocess

    code = "import sys, dpbench.models; assert 'vllm' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
