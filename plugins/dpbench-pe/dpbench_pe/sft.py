"""PE+SFT: PE's private selection, then the generator fine-tuned on what it selected.

PrE-Text's second stage (Hou, Shrivastava, Zhan, Conway, Le, Sagar, Fanti, Lazar, ICML 2024,
arXiv 2406.02958) and the POPri paper's "PE+SFT" baseline: after PE's DP iterations, a LoRA
adapter on the shared generator is fine-tuned (trl's SFT, loss on the completion only; on a CPU
each prompt run once into a KV cache so that only completions reach the LM head) to answer
the toolkit's public-seeded prompts with PE's selected texts, and ``final_samples`` texts are
sampled from base + adapter with fresh public prompts — POPri's final sampling, so the two
methods hand the evaluator the same number of texts from the same kind of prompt. The
fine-tuning sees only released texts: post-processing, no privacy spent beyond PE's releases.
Unlike PE, whose output is bounded by its population, the output size M is free.
"""

from __future__ import annotations

from dpbench.api import DpbenchError, MethodData, RunContext, SyntheticTexts, write_json
from dpbench.toolkit import stop_strings, trl_completion
from dpbench_pe.config import PeSftOptions
from dpbench_pe.method import PrivateEvolution

SFT_DIR = "sft"


class PeSft(PrivateEvolution):
    """PE followed by PrE-Text's expansion (see the module docstring)."""

    version = "2"
    citation = """\
@inproceedings{hou2024pretext,
  title = {{PrE-Text}: Training Language Models on Private Federated Data in the Age of {LLMs}},
  author = {Hou, Charlie and Shrivastava, Akshat and Zhan, Hongyuan and Conway, Rylan and Le, Trang and
            Sagar, Adithya and Fanti, Giulia and Lazar, Daniel},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  series = {Proceedings of Machine Learning Research},
  volume = {235},
  year = {2024},
  eprint = {2406.02958},
  archivePrefix = {arXiv}
}
"""
    config_class = PeSftOptions

    def run(self, data: MethodData, ctx: RunContext) -> SyntheticTexts:
        o = self.config
        selected = super().run(data, ctx).texts
        adapter = ctx.checkpoint_dir / SFT_DIR / "adapter"
        if ctx.load_state(f"{SFT_DIR}/sft.json") is None:
            with ctx.phase(f"fine-tuning the generator on {len(selected)} selected texts"):
                stats = self._fine_tune(selected, data.public, adapter, ctx)
            ctx.log.info("PE+SFT: %s", stats)
            ctx.save_state(f"{SFT_DIR}/sft.json", stats)  # after the adapter: its presence marks it whole
        texts = ctx.load_state(f"{SFT_DIR}/synthetic.json")
        if texts is None:
            with ctx.phase(f"sampling {o.final_samples} texts from the fine-tuned generator"):
                prompts = o.public_prompts(data.public, count=o.final_samples, rng=ctx.rng("pe-sft-final-prompts"))
                generator = o.generator(ctx.device, max_lora_rank=o.lora_r)  # PE's stage serves no adapter
                try:
                    texts = o.complete(generator, prompts, stop=stop_strings(o.prompt_style),
                                       seed=ctx.seed_for("pe-sft-generate"), adapter=str(adapter))
                finally:
                    generator.close()
            ctx.save_state(f"{SFT_DIR}/synthetic.json", texts)
        return SyntheticTexts(texts=tuple(texts))

    def _fine_tune(self, selected, public, adapter, ctx: RunContext) -> dict:
        """LoRA SFT of the generator: each selected text the answer to a fresh public prompt."""
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import SFTTrainer

        from dpbench.toolkit import load_causal_lm, load_tokenizer, lora_config, prompt_cached_sft_trainer, use_bf16

        o = self.config
        if not selected:
            raise DpbenchError("PE+SFT: PE selected no texts to fine-tune on")
        prompts = o.public_prompts(public, count=len(selected), rng=ctx.rng("pe-sft-train-prompts"))
        records = [{"prompt": p, "completion": trl_completion(t, o.prompt_style)}
                   for p, t in zip(prompts, selected, strict=True)]
        bf16 = use_bf16(o.bf16, ctx.device)
        base = load_causal_lm(o.model, dtype="bfloat16" if bf16 and ctx.device == "cuda" else "float32",
                              device=ctx.device)
        trainer = (prompt_cached_sft_trainer() if ctx.device == "cpu" else SFTTrainer)(
            model=base, processing_class=load_tokenizer(o.model), train_dataset=Dataset.from_list(records),
            peft_config=lora_config(base, r=o.lora_r, alpha=o.lora_alpha),
            args=sft_config(o, output_dir=adapter.parent / "trainer", seed=ctx.seed_for("pe-sft") % 2**31,
                            device=ctx.device))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        trainer.model.save_pretrained(adapter)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        stats = {"texts": len(selected), "steps": trainer.state.global_step,
                 "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
        write_json(adapter.parent / "sft_losses.json", losses, indent=None)
        return stats


def sft_config(options: PeSftOptions, *, output_dir, seed: int, device: str):
    """trl's SFTConfig for PE+SFT's fine-tuning: loss on the completion only, no packing, no
    activation checkpointing (trl's default; on a CPU it would also keep the prompts from being
    cached)."""
    from trl import SFTConfig

    from dpbench.toolkit import use_bf16

    return SFTConfig(output_dir=str(output_dir), num_train_epochs=options.sft_epochs,
                     per_device_train_batch_size=options.sft_batch_size, learning_rate=options.sft_learning_rate,
                     lr_scheduler_type="constant", max_length=options.sft_max_length, completion_only_loss=True,
                     packing=False, activation_checkpointing=False, bf16=use_bf16(options.bf16, device),
                     use_cpu=device == "cpu", logging_steps=1, save_strategy="no", report_to="none", seed=seed,
                     data_seed=seed, disable_tqdm=True, dataloader_num_workers=0)
