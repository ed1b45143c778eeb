"""POPri's whole loop on a tiny random Llama: on-policy rounds, base reference, resume, ledger."""

import json

import numpy as np
import pytest

from dpbench.api import RunContext
from dpbench.results import load_artifact, load_result
from dpbench.runner import Runner
from dpbench.suite import load_suite


def _suite(tmp_path, model, rounds=2, max_length=128, select="last", bf16="auto"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "popri_tiny.yaml"
    path.write_text(f"""
seeds: [0]
privacy: {{epsilon: 4, delta: 1e-5, accountant: rdp}}
datasets: {{toy_texts: {{num_clients: 12}}}}
methods:
  popri:
    model: {model}
    rounds: {rounds}
    prompts_per_round: 4
    samples_per_prompt: 3
    reject_rank: 2
    max_new_tokens: 8
    truncate_tokens: 8
    final_samples: 6
    pairs_per_step: 2
    epochs_per_round: 1
    lora_r: 2
    lora_alpha: 4
    max_length: {max_length}
    generation_batch_size: 8
    select: {select}
    bf16: {bf16}
evaluators: {{next_word: {{}}}}
""")
    return load_suite(path, runs_dir=tmp_path / "runs")


def test_rounds_are_on_policy_and_privacy_is_ledgered(tmp_path, tiny_llama, hashing_embedder, toy_plugin, popri_plugin,
                                                      generation_calls, monkeypatch):
    from dpbench_popri.method import Popri

    trained, train = [], Popri._train

    def recorded(self, records, **kwargs):
        trained.append(records)
        return train(self, records, **kwargs)

    monkeypatch.setattr(Popri, "_train", recorded)
    suite = _suite(tmp_path, tiny_llama)
    report = Runner(suite).run()
    assert not report.failed, report.failed
    (spec,) = suite.runs
    folder = suite.folder / spec.run_id
    state = folder / "state"
    # round 0 samples the base model, round 1 base + round 0's adapter; the monitoring of the
    # last checkpoint and the final data use round 1's adapter (select: last)
    adapters = [c["adapter"] for c in generation_calls]
    assert adapters == [None, str(state / "round000" / "adapter"), str(state / "round001" / "adapter"),
                        str(state / "round001" / "adapter")]
    assert [c["n"] for c in generation_calls] == [12, 12, 12, 6]
    result = load_result(folder)
    assert [e["key"] for e in result.privacy["releases"]] == ["popri-round-0", "popri-round-1"]
    assert 0 < result.privacy["epsilon_spent"] <= 4
    assert len(load_artifact(folder).texts) == 6
    monitor = json.loads((state / "monitor.json").read_text())
    assert [h["checkpoint"] for h in monitor["history"]] == [0, 1, 2] and monitor["chosen_checkpoint"] == 2
    assert all(np.isfinite(h["mean_pairwise_cosine"]) for h in monitor["history"])
    for r in (0, 1):  # every pair reached DPO whole
        dpo = json.loads((state / f"round{r:03d}" / "dpo.json").read_text())
        assert dpo["pairs_dropped"] == dpo["pairs_cut"] == 0 and 0 < dpo["longest_pair_tokens"] <= 128
    held_out = json.loads((state / "round001" / "dpo.json").read_text())  # round 1's pairs, before training
    assert 0 < held_out["held_out_loss"] and 0 <= held_out["held_out_reward_accuracy"] <= 1
    assert "held_out_loss" not in json.loads((state / "round000" / "dpo.json").read_text())  # policy = reference
    assert monitor["history"][1]["dpo_held_out_loss"] == held_out["held_out_loss"]  # checkpoint 1's policy
    assert "dpo_held_out_loss" not in monitor["history"][0]
    pairs = json.loads((state / "round000" / "pairs.json").read_text())
    assert [p["chosen"] // 3 for p in pairs] == [0, 1, 2, 3] and all(p["chosen"] != p["rejected"] for p in pairs)

    # afterwards any checkpoint's final texts can be regenerated: the chosen one gives back the
    # run's own texts, checkpoint 0 samples the base model
    runner = Runner(suite)
    method, data = runner.method(spec), runner.dataset(spec.dataset).for_method()
    ctx = RunContext(run_id=spec.run_id, seed=spec.seed, output_dir=tmp_path / "after", budget=spec.budget,
                     cache=runner.cache)
    again = method.checkpoint_texts(data, ctx, state=state, checkpoint=2, saved=tmp_path / "chosen.json")
    assert (tuple(again) == load_artifact(folder).texts
            and generation_calls[-1]["adapter"] == str(state / "round001" / "adapter"))
    base = method.checkpoint_texts(data, ctx, state=state, checkpoint=0, saved=tmp_path / "base.json")
    assert generation_calls[-1]["adapter"] is None and len(base) == 6
    # and each round's DPO pairs can be rebuilt from what the run saved
    assert [method.round_pairs(data, ctx, state=state, round_index=r) for r in (0, 1)] == trained


def test_a_round_without_participants_releases_noise_only(tmp_path, tiny_llama, hashing_embedder, toy_plugin,
                                                          popri_plugin, monkeypatch):
    """An empty cohort still releases (and charges) the round's noise, over every candidate."""
    from dpbench.privacy.session import Session

    monkeypatch.setattr(Session, "cohort", lambda self, round_index: [])
    suite = _suite(tmp_path, tiny_llama, rounds=1)
    report = Runner(suite).run()
    assert not report.failed, report.failed
    folder = suite.folder / suite.runs[0].run_id
    notes = [json.loads(line) for line in (folder / "diagnostics.jsonl").read_text().splitlines()]
    assert [(n["key"], n["clients"]) for n in notes] == [("popri-round-0", 0)]
    assert [e["shape"] for e in load_result(folder).privacy["releases"]] == [[12]]


def test_a_max_length_that_would_cut_completions_fails_before_any_release(tmp_path, tiny_llama, hashing_embedder,
                                                                         toy_plugin, popri_plugin, generation_calls):
    suite = _suite(tmp_path, tiny_llama, max_length=30)
    (error,) = Runner(suite).run().failed.values()
    assert "max_length: 30 is not allowed; expected at least" in error
    assert generation_calls == []  # nothing generated, nothing released
    assert not (suite.folder / suite.runs[0].run_id / "ledger.jsonl").exists()


def test_the_length_bound_covers_what_trl_tokenizes(tmp_path, tiny_llama):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from dpbench.models.resolve import load_tokenizer
    from dpbench.toolkit import build_prompt
    from dpbench_popri.dpo import pair_tokens

    tok = load_tokenizer(str(tiny_llama))
    prompt = build_prompt(["w1 w2 w3 w4", "w5 w6", "w7 w8 w9"], "chat")
    completion = " ".join(f"w{i}" for i in range(8))
    completion_tokens = len(tok(completion, add_special_tokens=False)["input_ids"])
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": completion}],
            "rejected": [{"role": "assistant", "content": "w1"}]}
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama), processing_class=tok,
                         args=DPOConfig(output_dir=str(tmp_path), max_length=None, report_to="none", use_cpu=True),
                         train_dataset=Dataset.from_list([pair]))
    (row,) = trainer.train_dataset
    assert len(row["prompt_ids"]) + len(row["chosen_ids"]) <= pair_tokens(tok, prompt, completion_tokens)


def test_reference_is_the_base_model_and_adapter_carries_over(tmp_path, tiny_llama, hashing_embedder, toy_plugin,
                                                               popri_plugin, monkeypatch):
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    probe = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        base_logits = base(probe).logits
    seen = []
    original_train = DPOTrainer.train

    def train(self, *args, **kwargs):
        with torch.no_grad(), self.model.disable_adapter():
            reference = self.model(probe).logits
        lora = {k: v.clone() for k, v in get_peft_model_state_dict(self.model).items()}
        seen.append((reference, lora, self.ref_model))
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "train", train)
    suite = _suite(tmp_path, tiny_llama, bf16=False)  # fp32 logits to compare (on any machine)
    assert not Runner(suite).run().failed
    state = suite.folder / suite.runs[0].run_id / "state"
    for reference, _, ref_model in seen:
        assert ref_model is None  # trl's reference is the policy with its adapter disabled ...
        torch.testing.assert_close(reference, base_logits)  # ... which is exactly the base model
    # round 1 starts from round 0's trained adapter, not a fresh one
    saved = load_file(state / "round000" / "adapter" / "adapter_model.safetensors")
    carried = seen[1][1]
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)
    for key, value in saved.items():
        match = [v for k, v in carried.items() if k.replace(".default", "") == key.replace(".default", "")]
        torch.testing.assert_close(match[0], value)


def test_killed_between_rounds_resumes_to_the_same_result(tmp_path, tiny_llama, hashing_embedder, toy_plugin,
                                                          popri_plugin, monkeypatch):
    import dpbench_popri.dpo as dpo

    straight = _suite(tmp_path / "a", tiny_llama)
    assert not Runner(straight).run().failed

    killed = _suite(tmp_path / "b", tiny_llama)
    original = dpo.train_round
    calls = []

    def dies_in_round_one(**kwargs):
        calls.append(kwargs["out_dir"].name)
        if kwargs["out_dir"].name == "round001" and calls.count("round001") == 1:
            raise KeyboardInterrupt
        return original(**kwargs)

    monkeypatch.setattr(dpo, "train_round", dies_in_round_one)
    with pytest.raises(KeyboardInterrupt):
        Runner(killed).run()
    assert not Runner(killed).run().failed
    assert calls == ["round000", "round001", "round001"]  # round 0 was not redone

    a = straight.folder / straight.runs[0].run_id
    b = killed.folder / killed.runs[0].run_id
    ledger_b = [json.loads(line)["key"] for line in (b / "ledger.jsonl").read_text().splitlines()]
    assert ledger_b == ["popri-round-0", "popri-round-1"]
    assert load_result(a).privacy["epsilon_spent"] == load_result(b).privacy["epsilon_spent"]
    assert load_artifact(a).texts == load_artifact(b).texts


def test_downstream_rule_scores_every_checkpoint_on_validation_and_resumes(tmp_path, tiny_llama, hashing_embedder,
                                                                          toy_plugin, popri_plugin, generation_calls,
                                                                          reported, monkeypatch):
    """``best_validation_downstream``: each checkpoint's final texts scored by the suite's
    evaluator on validation, the best one returned without sampling it again; a run killed
    while scoring keeps the checkpoints scored before."""
    from dpbench.testing.toy import NextWord

    scored = []
    returned = [0.2, None, 0.5, 0.4]  # checkpoint 0; checkpoint 1 killed, then scored; checkpoint 2

    def validation_score(self, artifact, data, ctx):
        assert not hasattr(data, "test")  # what a method sees
        scored.append(artifact.texts)
        if len(scored) == 2:
            raise KeyboardInterrupt
        return returned[len(scored) - 1]

    monkeypatch.setattr(NextWord, "validation_score", validation_score)
    suite = _suite(tmp_path, tiny_llama, select="best_validation_downstream")
    with pytest.raises(KeyboardInterrupt):
        Runner(suite).run()
    assert not Runner(suite).run().failed
    assert len(scored) == 4 and scored[1] == scored[2]  # checkpoint 1 again after the kill, checkpoint 0 not
    state = suite.folder / suite.runs[0].run_id / "state"
    monitor = json.loads((state / "monitor.json").read_text())
    assert [h["validation_downstream"] for h in monitor["history"]] == [0.2, 0.5, 0.4]
    live = [{} for _ in monitor["history"]]  # what publishers got live, resumed rounds reported again
    for _, step, entry in reported:
        live[step].update(entry.get("monitor", {}))
    assert live == monitor["history"]
    assert monitor["chosen_checkpoint"] == 1
    texts = load_artifact(suite.folder / suite.runs[0].run_id).texts
    assert texts == scored[2] == tuple(json.loads((state / "final" / "checkpoint1.json").read_text()))
    finals = [c["adapter"] for c in generation_calls if c["n"] == 6]  # one final sample per checkpoint, no more
    assert finals == [None, str(state / "round000" / "adapter"), str(state / "round001" / "adapter")]
    downstream = json.loads((state / "final" / "downstream.json").read_text())
    assert sorted(downstream) == ["0", "1", "2"] and all(v["seconds"]["evaluation"] >= 0 for v in downstream.values())


def test_options_are_validated():
    from dpbench.errors import ConfigError
    from dpbench_popri.config import PopriOptions

    with pytest.raises(ConfigError, match="reject_rank: 4 is not allowed; expected an integer in 1..3"):
        PopriOptions(samples_per_prompt=4, reject_rank=4)
    with pytest.raises(ConfigError, match="prompt_style"):
        PopriOptions(prompt_style="poem")


def test_nothing_but_the_releases_depends_on_a_client(tmp_path, tiny_llama, hashing_embedder, toy_plugin):
    """D vs D plus a canary client under the same releases: every file (pairs, adapters, monitor),
    log line and output text is equal, so no per-client quantity leaves a round unnoised."""
    from dpbench.testing.leaks import check_release_only
    from dpbench_popri.config import PopriOptions
    from dpbench_popri.method import Popri

    method = Popri(PopriOptions(model=str(tiny_llama), rounds=1, prompts_per_round=4, samples_per_prompt=3,
                                reject_rank=2, max_new_tokens=8, truncate_tokens=8, final_samples=6, pairs_per_step=2,
                                epochs_per_round=1, lora_r=2, lora_alpha=4, max_length=128, generation_batch_size=8))
    data = toy_plugin.ToyTexts(toy_plugin.ToyTextsOptions(num_clients=12)).load(None).for_method()
    assert check_release_only(method, data, folder=tmp_path) == []
