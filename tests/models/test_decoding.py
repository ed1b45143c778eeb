"""dpbench's decode loop against transformers' ``generate``, the reference: the same logits,
the same greedy tokens (with LoRA adapters, stop strings, EOS, padding, repeated prompts), and
sampled texts of the same likelihood under the transformers model."""

from __future__ import annotations

import pytest

from dpbench.models import SamplingParams, TransformersGenerator

PROMPTS = ["the cat sat", "the dog ran on and on and then it", [{"role": "user", "content": "write one line"}],
           "number", "the cat sat", "the cat sat", "it"]


@pytest.fixture(scope="module")
def gqa_lm_dir(tiny_lm_dir, tmp_path_factory):
    """A 3-layer Llama with grouped-query attention (4 heads, 2 key/value heads) and a sharpened
    output layer, so that sampling from it is far from uniform."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(3)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    folder = tmp_path_factory.mktemp("gqa-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def last_logits(model, tok, sequences):
    """The model's own next-token logits after each sequence (left-padded together)."""
    from dpbench.models.decoding import left_padded

    ids, mask = left_padded(sequences, tok.pad_token_id, device="cpu")
    return model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits[:, -1]


def pair(folder, batch_size=3):
    reference = TransformersGenerator(str(folder), batch_size=batch_size, decode_loop="transformers")
    loop = TransformersGenerator(reference.model, tokenizer=reference.tokenizer, batch_size=batch_size)
    return reference, loop


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_greedy_tokens_equal_generate(gqa_lm_dir, batch_size):
    reference, loop = pair(gqa_lm_dir, batch_size)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    assert loop.generate(PROMPTS, params, seed=0) == reference.generate(PROMPTS, params, seed=0)


def test_greedy_with_stop_strings_and_adapter(tiny_lm_dir, tiny_adapter_dir):
    reference, loop = pair(tiny_lm_dir)
    params = SamplingParams(temperature=0, max_new_tokens=16, stop=(" the", "on"))
    assert loop.generate(PROMPTS, params, seed=0) == reference.generate(PROMPTS, params, seed=0)
    adapted = loop.generate(PROMPTS, params, seed=0, adapter=tiny_adapter_dir)
    assert adapted == reference.generate(PROMPTS, params, seed=0, adapter=tiny_adapter_dir)
    assert adapted != loop.generate(PROMPTS, params, seed=0)  # the adapter is applied ...
    assert loop.generate(PROMPTS, params, seed=0) == reference.generate(PROMPTS, params, seed=0)  # ... and removed


@pytest.mark.parametrize("pack_tokens", [2048, 30, 1])
def test_logits_equal_the_models_forward(gqa_lm_dir, pack_tokens, monkeypatch):
    """Each step's logits are the model's own for the same sequence, for every row still
    decoding, while samples of one prompt (which share its cached keys) diverge and stop at
    different steps, a prompt is left with no row, and finished prompts' caches are dropped;
    prompts prefilled in one pack, in packs of several, or one by one (sorted by length)."""
    import torch

    from dpbench.models import decoding
    from dpbench.models.decoding import LlamaDecoder

    monkeypatch.setattr(decoding, "PREFILL_TOKENS", pack_tokens)

    reference, _ = pair(gqa_lm_dir)
    model, tok = reference.model, reference.tokenizer
    texts = ("the cat sat on", "the cat sat on", "it", "the dog ran on and on", "the dog ran on and on", "number",
             "a b c")  # five distinct prompts: A A B C C D E
    prompts = [reference.prompt_ids(p) for p in texts]
    stop = tok.eos_token_id
    # (step, active row) drawing EOS: B's only row (B keeps its cache with no row left), then both
    # A rows and D (the caches of A, B and D are dropped: C and E remain, not contiguous), then
    # one C row (C goes on with one row)
    ends = {(1, 2), (2, 0), (2, 1), (2, 4), (3, 1)}
    seen = []

    def draw(logits):
        seen.append(logits.clone())
        step = len(seen) - 1
        return torch.tensor([stop if (step, i) in ends else (7 * step + 3 * i + 1) % (len(tok) - 1)
                             for i in range(len(logits))])

    with torch.inference_mode():
        new = LlamaDecoder(model).decode(prompts, max_new_tokens=6, eos_ids=[stop], draw=draw)
        assert [len(n) for n in new] == [3, 3, 2, 6, 4, 3, 6]
        for step, logits in enumerate(seen):
            sequences = [p + n[:step] for p, n in zip(prompts, new, strict=True) if len(n) > step]
            torch.testing.assert_close(logits, last_logits(model, tok, sequences).float(), rtol=1e-4, atol=1e-4)


def test_bf16_logits_are_as_close_to_float32_as_the_bf16_models(gqa_lm_dir):
    """In bf16 (prompt caches, products and activations in bf16) each step's logits stay as
    close to the float32 model's as the bf16 model's own forward does, over prompts of
    several lengths (packed prefill, padded prompt caches) and rows sharing a prompt, with
    attention peaked enough that an error in it shows."""
    import torch

    from dpbench.models.decoding import LlamaDecoder

    reference, _ = pair(gqa_lm_dir)
    model, tok = reference.model, reference.tokenizer
    half = TransformersGenerator(str(gqa_lm_dir), dtype="bfloat16", decode_loop="transformers").model
    with torch.no_grad():  # peaked attention, so that an error in it shows in the logits
        for lm in (model, half):
            for layer in lm.model.layers:
                layer.self_attn.q_proj.weight.mul_(40.0)
                layer.self_attn.k_proj.weight.mul_(40.0)
    prompts = [reference.prompt_ids(p) for p in ("the cat sat on", "the cat sat on", "it", "the dog ran on and on")]
    seen = []

    def draw(logits):
        seen.append(logits.clone())
        return torch.tensor([(5 * len(seen) + 3 * i + 1) % (len(tok) - 1) for i in range(len(logits))])

    with torch.inference_mode():
        new = LlamaDecoder(half).decode(prompts, max_new_tokens=5, eos_ids=[], draw=draw)
        for step, logits in enumerate(seen):
            sequences = [p + n[:step] for p, n in zip(prompts, new, strict=True)]
            exact, rounded = last_logits(model, tok, sequences).float(), last_logits(half, tok, sequences).float()
            assert logits.dtype == torch.float32
            loop_error, model_error = (logits - exact).abs().mean(), (rounded - exact).abs().mean()
            assert model_error > 0  # bf16 rounding is visible at this scale ...
            assert loop_error <= 1.5 * model_error  # ... and the loop's is no larger than the model's


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("packed", [True, False])
def test_fused_products_equal_the_unfused_arithmetic(dtype, packed):
    """The MLP's activation, gating and residual addition inside the product (oneDNN post-ops)
    give the separate operations' results up to one rounding, packed or not."""
    import torch
    from torch.nn.functional import linear, silu

    from dpbench.models.decoding import _Linear

    torch.manual_seed(0)
    dtype = getattr(torch, dtype)
    weight, x, other = (torch.randn(*shape).to(dtype) for shape in ((48, 32), (5, 32), (5, 48)))
    product = _Linear(weight)
    if not packed:
        product.packed = None
    elif product.packed is None:
        pytest.skip("torch without oneDNN")
    exact = linear(x.double(), weight.double())
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    for fused, unfused in ((product.silu(x), silu(exact)), (product.times(x, other), exact * other.double()),
                           (product.plus(x, other), exact + other.double())):
        assert fused.dtype == dtype
        scale = unfused.abs().max()
        assert (fused.double() - unfused).abs().max() <= tolerance * scale


def test_a_prompt_without_tokens_is_refused(gqa_lm_dir):
    from dpbench.models.decoding import LlamaDecoder

    reference, _ = pair(gqa_lm_dir)
    with pytest.raises(ValueError, match="without tokens"):
        LlamaDecoder(reference.model).decode([[5, 6], []], max_new_tokens=2, eos_ids=[], draw=lambda x: x.argmax(-1))


def test_rows_stop_at_eos_others_continue(gqa_lm_dir):
    import torch

    from dpbench.models.decoding import LlamaDecoder

    reference, _ = pair(gqa_lm_dir)
    model = reference.model
    prompts = [reference.prompt_ids(p) for p in ("the cat sat", "the dog ran on and on and then it", "number")]
    with torch.inference_mode():
        free = LlamaDecoder(model).decode(prompts, max_new_tokens=10, eos_ids=[-1],
                                          draw=lambda logits: logits.argmax(-1))
        eos = free[0][2]  # the first row's third token ends it; the others run on unchanged
        cut = LlamaDecoder(model).decode(prompts, max_new_tokens=10, eos_ids=[eos],
                                         draw=lambda logits: logits.argmax(-1))
    for whole, stopped in zip(free, cut, strict=True):
        end = whole.index(eos) + 1 if eos in whole else len(whole)
        assert stopped == whole[:end]
    assert len(cut[0]) == 3


def test_sampled_tokens_have_the_reference_likelihood(gqa_lm_dir):
    """Mean per-token log-probability (under the transformers model) of 96 sampled
    continuations, drawn by the loop and by ``generate`` with the same sampler, agrees within
    4 standard errors of the difference, while the loop at temperature 2 (the wrong
    distribution) is far outside it."""
    import torch
    from transformers import LogitsProcessorList

    from dpbench.models.decoding import LlamaDecoder
    from dpbench.models.generation import NucleusSampler

    reference, _ = pair(gqa_lm_dir)
    model, tok = reference.model, reference.tokenizer
    prompts = [reference.prompt_ids(p) for p in ("the cat sat", "the dog ran on", "number", "it")] * 24
    new_tokens = 8

    def sampler(temperature):
        return NucleusSampler(temperature=temperature, top_p=1.0, generator=torch.Generator().manual_seed(5))

    def mean_log_probs(samples):
        values = []
        for head, new in samples:
            ids = head + list(new)
            scores = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
            picked = scores[torch.arange(len(head) - 1, len(ids) - 1), torch.tensor(new)]
            values.append(float(picked.mean()))
        return torch.tensor(values)

    def generated(temperature):
        out, draw = [], sampler(temperature)
        for head in dict.fromkeys(map(tuple, prompts)):  # one batch of 24 rows per distinct prompt
            rows = model.generate(input_ids=torch.tensor([head] * 24), attention_mask=torch.ones(24, len(head),
                                  dtype=torch.long), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, pad_token_id=tok.pad_token_id,
                                  logits_processor=LogitsProcessorList([draw]))
            out += [(list(head), row[len(head):].tolist()) for row in rows]
        return out

    def looped(temperature):
        new = LlamaDecoder(model).decode(prompts, max_new_tokens=new_tokens, eos_ids=[],
                                         draw=sampler(temperature).tokens)
        return list(zip(prompts, new, strict=True))

    with torch.inference_mode():
        want, got, hot = mean_log_probs(generated(1.0)), mean_log_probs(looped(1.0)), mean_log_probs(looped(2.0))
    stderr = float((want.var() / len(want) + got.var() / len(got)).sqrt())
    assert abs(float(got.mean() - want.mean())) < 4 * stderr
    assert float(want.mean() - hot.mean()) > 8 * stderr


def test_other_architectures_fall_back_to_generate(tiny_gpt2):
    reference = TransformersGenerator(str(tiny_gpt2), batch_size=2, decode_loop="transformers")
    loop = TransformersGenerator(reference.model, tokenizer=reference.tokenizer, batch_size=2)
    params = SamplingParams(temperature=1.0, max_new_tokens=6)
    prompts = ["w1 w2", "w3", "w4 w5 w6"]
    assert loop.generate(prompts, params, seed=4) == reference.generate(prompts, params, seed=4)


def test_unsupported_names_the_reason(tiny_gpt2, gqa_lm_dir):
    from transformers import AutoModelForCausalLM

    from dpbench.models.decoding import LlamaDecoder, unsupported

    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    assert "gpt2" in unsupported(gpt2)
    with pytest.raises(ValueError, match="gpt2"):
        LlamaDecoder(gpt2)
    assert unsupported(AutoModelForCausalLM.from_pretrained(gqa_lm_dir)) is None


def test_loop_is_a_checked_choice(tiny_lm_dir):
    from dpbench.errors import ConfigError

    with pytest.raises(ConfigError, match="decode_loop"):
        TransformersGenerator(str(tiny_lm_dir), decode_loop="fast")
