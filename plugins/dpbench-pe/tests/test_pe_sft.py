"""PE+SFT on a tiny random Llama: PE's releases only, the generator fine-tuned on PE's selection,
M texts sampled from the adapter, and a kill after fine-tuning resumes without redoing it."""

import json

import pytest

from dpbench.results import load_artifact, load_result
from dpbench.runner import Runner
from dpbench.suite import load_suite


def _suite(tmp_path, model):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pe_sft_tiny.yaml"
    path.write_text(f"""
seeds: [0]
privacy: {{epsilon: 4, delta: 1e-5, accountant: rdp}}
datasets: {{toy_texts: {{num_clients: 12}}}}
methods:
  pe_sft:
    model: {model}
    iterations: 2
    synthetic_samples: 4
    variations_per_sample: 1
    max_new_tokens: 8
    truncate_tokens: 8
    generation_batch_size: 8
    sft_epochs: 1
    sft_batch_size: 2
    lora_r: 2
    lora_alpha: 4
    final_samples: 6
    bf16: false
evaluators: {{next_word: {{}}}}
""")
    return load_suite(path, runs_dir=tmp_path / "runs")


def test_the_generator_is_fine_tuned_on_pe_s_selection_and_sampled(tmp_path, tiny_llama, hashing_embedder,
                                                                  toy_plugin, pe_plugin, generation_calls,
                                                                  monkeypatch):
    import dpbench.synthetic.finetune as finetune

    checkpointing, forward = [], finetune.prompt_cached_forward

    def recording(model, *args, **kwargs):
        checkpointing.append(bool(getattr(model, "is_activation_checkpointing", False)))
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(finetune, "prompt_cached_forward", recording)
    suite = _suite(tmp_path, tiny_llama)
    report = Runner(suite).run()
    assert not report.failed, report.failed
    assert checkpointing == [False, False]  # both steps through the prompt-cached forward, which checkpointing stops
    folder = suite.folder / suite.runs[0].run_id
    state = folder / "state"
    result = load_result(folder)
    assert [e["key"] for e in result.privacy["releases"]] == ["pe-iteration-0", "pe-iteration-1"]  # SFT: none
    sft = json.loads((state / "sft" / "sft.json").read_text())
    assert sft["texts"] == 4 and sft["steps"] == 2  # PE's 4 selected texts, 2 per step, one epoch
    assert (state / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert generation_calls[-1] == {"n": 6, "adapter": str(state / "sft" / "adapter")}
    texts = load_artifact(folder).texts
    assert len(texts) == 6 and list(texts) == json.loads((state / "sft" / "synthetic.json").read_text())
    assert result.output_texts == 6


def test_a_run_killed_after_fine_tuning_resumes_without_redoing_it(tmp_path, tiny_llama, hashing_embedder,
                                                                   toy_plugin, pe_plugin, monkeypatch):
    from trl import SFTTrainer

    from dpbench.models.generation import TransformersGenerator

    straight = _suite(tmp_path / "a", tiny_llama)
    assert not Runner(straight).run().failed
    killed = _suite(tmp_path / "b", tiny_llama)
    trained, real_generate, real_train = [], TransformersGenerator.generate, SFTTrainer.train

    def generate(self, prompts, params, *, seed, adapter=None):
        if adapter is not None and adapter.endswith("adapter") and not trained[1:]:
            trained.append("killed")
            raise KeyboardInterrupt
        return real_generate(self, prompts, params, seed=seed, adapter=adapter)

    monkeypatch.setattr(TransformersGenerator, "generate", generate)
    monkeypatch.setattr(SFTTrainer, "train", lambda self, *a, **k: (trained.append("sft"), real_train(self))[1])
    with pytest.raises(KeyboardInterrupt):
        Runner(killed).run()
    assert not Runner(killed).run().failed
    assert trained == ["sft", "killed"]  # fine-tuned once
    a, b = (s.folder / s.runs[0].run_id for s in (straight, killed))
    assert load_artifact(a).texts == load_artifact(b).texts
