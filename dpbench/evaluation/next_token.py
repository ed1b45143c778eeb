"""``next_token``: the shared downstream yardstick (the POPri paper's, without its tokenization bug).

Protocol
--------
1. **Pretrained model (once per runs folder).** The paper fine-tunes a C4-pretrained distilGPT2. No
   small pretrained causal LM with a fitting vocabulary exists offline, so dpbench pretrains
   its own on the dataset's **public** split only: a byte-level BPE tokenizer
   (``vocab_size`` = 8,192) and a GPT-2-shape model (``n_layer`` 4 × ``n_embd`` 256, ~5 M
   parameters) for ``pretrain_steps`` steps. Like the paper's model it has seen general
   text but none of the private clients, so the ε = 0 reference keeps its meaning (a model
   that saw public text only), and it is small enough to fine-tune in a minute or two on
   2 CPU cores. It is cached in the shared cache (``runs/.cache``), keyed by everything it depends on (public
   texts, tokenizer and model shape, pretraining options and version, library
   versions); ``initial_model`` hands its folder to federated methods.
2. **Fine-tuning.** ``SyntheticTexts`` are fine-tuned on for exactly ``train_steps`` AdamW
   steps of ``batch_size`` sequences (constant ``lr`` = 2e-4, the paper's), however many texts
   the set has: every method in a suite gets the same model, the same data and the same
   budget of training sequences (≤ ``max_length`` tokens each). An empty set means no
   fine-tuning (the ε = 0 reference). A ``TrainedModel`` (a federated method's own training
   of the ``initial_model``) is scored as it is.
3. **Model selection** on ``data.validation`` only, never on test: the candidates are the
   pretrained model itself (step 0) and the checkpoints every ``eval_every`` steps and at the
   end; the one with the best validation accuracy (ties: the earlier) is scored on test. With
   the pretrained model a candidate for every row, a set that teaches nothing scores the ε = 0
   reference instead of being charged for how fast it over-fits, and the score of a set is
   what its best point of training gained over the public-only model.
4. **Scoring** on ``data.test``: each text is tokenized once, ``BOS + text + EOS`` cut to
   ``max_length`` (= 64, as the paper) tokens; padding is masked out (-100). Top-1 accuracy
   = correct argmax predictions ÷ target tokens over the whole split (micro-average: every
   token after BOS, EOS included); top-5 accuracy likewise; cross-entropy is the mean
   per-token negative log-likelihood in nats.

Determinism: for a fixed ``ctx.seed`` (fine-tuning) and ``pretrain_seed`` (pretraining),
results are identical on the same CPU and thread count. ``bf16`` autocast keeps fp32 master
weights; its default, ``auto``, turns it on where the device computes bf16 natively (~1.7×
faster there, several times slower elsewhere: ``dpbench.models.precision``), and the caches
key on what it resolved to.

Caching: the no-fine-tuning evaluation, and any evaluation of a given synthetic set at a
given seed, are cached keyed by their inputs, so the ε = 0 row (and repeated
identical evaluations) cost one scoring pass.

Versioning: bump ``version`` whenever a score could change (protocol, defaults, tokenization,
training loop, metric arithmetic). 1 (2026-11): first version (lr 1e-3, checkpoints every 25
steps, pretrained model not a candidate). 2 (2026-12): lr 2e-4, checkpoints every 50 steps, the
pretrained model a candidate: v1 lost ~0.3–0.8 point on 256 *public* texts by over-fitting
before its first checkpoint, so small sets were ranked by how fast they over-fit
(``benchmarks/evaluator_response.py`` measures both rules on sets of known worth).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dpbench.api.artifacts import SyntheticTexts, TrainedModel
from dpbench.api.config import check_bf16, check_int, check_positive, config_dict
from dpbench.api.evaluator import Evaluator, MetricSpec
from dpbench.cache import texts_key
from dpbench.errors import ConfigError, DpbenchError
from dpbench.files import write_json
from dpbench.models.precision import use_bf16

if TYPE_CHECKING:
    from dpbench.api.context import RunContext
    from dpbench.api.dataset import FederatedTextData, MethodData


class EvaluationError(DpbenchError, ValueError):
    """The evaluator cannot score this artifact on this data."""


@dataclass(frozen=True)
class NextTokenOptions:
    """Options of ``next_token`` (defaults sized for ~1–2 min a call on 2 CPU cores).

    Model: ``vocab_size`` (BPE trained on the public split), ``n_layer``, ``n_embd``,
    ``n_head``, ``max_length`` (tokens per text incl. BOS/EOS; the paper's 64).
    Pretraining (public split, once per runs folder): ``pretrain_steps`` × ``pretrain_batch_size``
    sequences, peak ``pretrain_lr`` with linear warmup (``pretrain_warmup`` steps) and cosine
    decay, seeded by ``pretrain_seed`` (not the run seed: all runs share one model).
    Fine-tuning: ``train_steps`` × ``batch_size`` sequences at constant ``lr`` (AdamW, weight
    decay 0.01, gradient norm clipped at 1); validation before training (the pretrained model
    is a candidate) and every ``eval_every`` steps.
    ``bf16``: bfloat16 autocast for training and scoring (true, false or auto). ``eval_batch_size``: scoring batch.
    ``max_eval_texts``: score at most this many validation/test texts (seeded subset; for
    smoke runs); ``None``: all.

    Cost at the defaults on 2 CPU cores without native bf16 (sotu, ~1,000 validation and test
    texts): pretraining ~6 min once per runs folder; ~0.9 s a fine-tuning step and ~10 s a
    scoring pass over 1,000 texts, so ~3.5 min per fine-tuned evaluation and ~20 s for the
    no-fine-tuning one. CI smoke size (~5 s in
    all, numbers meaningless): ``{vocab_size: 1024, n_layer: 1, n_embd: 64, n_head: 2,
    pretrain_steps: 30, pretrain_batch_size: 16, train_steps: 10, batch_size: 16,
    eval_every: 5}`` with the dataset's ``max_eval_texts``/``max_public_texts`` caps.
    """

    vocab_size: int = 8192
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    max_length: int = 64
    pretrain_steps: int = 400
    pretrain_batch_size: int = 32
    pretrain_lr: float = 1e-3
    pretrain_warmup: int = 40
    pretrain_seed: int = 0
    train_steps: int = 150
    batch_size: int = 32
    lr: float = 2e-4
    eval_every: int = 50
    bf16: bool | str = "auto"
    eval_batch_size: int = 64
    max_eval_texts: int | None = None

    def __post_init__(self):
        check_int("vocab_size", self.vocab_size, minimum=260)
        check_int("n_layer", self.n_layer, minimum=1)
        check_int("n_head", self.n_head, minimum=1)
        check_int("n_embd", self.n_embd, minimum=self.n_head)
        if self.n_embd % self.n_head:
            raise ConfigError("n_embd", self.n_embd, f"a multiple of n_head ({self.n_head})")
        check_int("max_length", self.max_length, minimum=3)
        check_int("pretrain_steps", self.pretrain_steps, minimum=0)
        check_int("pretrain_batch_size", self.pretrain_batch_size, minimum=1)
        check_positive("pretrain_lr", self.pretrain_lr)
        check_int("pretrain_warmup", self.pretrain_warmup, minimum=0)
        check_int("pretrain_seed", self.pretrain_seed, minimum=0)
        check_int("train_steps", self.train_steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_int("eval_every", self.eval_every, minimum=1)
        check_bf16("bf16", self.bf16)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        if self.max_eval_texts is not None:
            check_int("max_eval_texts", self.max_eval_texts, minimum=1)

    def candidate_steps(self) -> tuple[int, ...]:
        """The steps model selection chooses among: 0 (the pretrained model), every ``eval_every``, the last."""
        return tuple(sorted({0, *range(self.eval_every, self.train_steps + 1, self.eval_every), self.train_steps}))

    def model_key(self, device: str) -> dict:
        """The options the pretrained model depends on (``bf16`` as it resolves on ``device``)."""
        keys = ("vocab_size", "n_layer", "n_embd", "n_head", "max_length", "pretrain_steps",
                "pretrain_batch_size", "pretrain_lr", "pretrain_warmup", "pretrain_seed")
        return {**{k: getattr(self, k) for k in keys}, "bf16": use_bf16(self.bf16, device)}


class NextTokenEvaluator(Evaluator):
    """Fine-tune a small pretrained causal LM on synthetic text; score next-token accuracy on
    the held-out test split. See the module docstring for the protocol."""

    version: ClassVar[str] = "2"
    # bumped only when the pretrained model could change (v2 changed fine-tuning and selection)
    pretraining_version: ClassVar[str] = "1"
    config_class: ClassVar[type] = NextTokenOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec("accuracy", True, "top-1 next-token accuracy on the test split (fraction of target tokens)"),
        MetricSpec("top5_accuracy", True, "top-5 next-token accuracy on the test split"),
        MetricSpec("cross_entropy", False, "mean next-token cross-entropy on the test split (nats per token)"),
        MetricSpec("validation_accuracy", True, "top-1 accuracy of the selected checkpoint on the validation split"),
    )
    primary_metric: ClassVar[str] = "accuracy"

    # -- public API --------------------------------------------------------------------------

    def initial_model(self, data: MethodData | FederatedTextData, ctx: RunContext) -> Path:
        """The pretrained model's folder (``save_pretrained`` format, tokenizer included).

        Federated methods start from it (``AutoModelForCausalLM.from_pretrained(path)``,
        ``AutoTokenizer.from_pretrained(path)``), train with the same tokenization
        (``dpbench.evaluation.lm.encode_texts`` with ``max_length``) and return
        ``TrainedModel(path_of_their_save_pretrained_folder)``. The folder is shared through
        the shared cache: read it, never write into it.
        """
        public = tuple(data.public)
        if not public:
            raise EvaluationError(
                "next_token: the dataset has no public texts to pretrain the evaluator's model on "
                "(set the dataset's public_fraction or public file)"
            )
        key = {"evaluator": "next_token", "version": self.pretraining_version, "public": texts_key(public),
               "options": self.config.model_key(ctx.device), "libs": _lib_versions()}

        def build(folder: Path) -> None:
            self._pretrain(public, folder, ctx)

        return ctx.cache.get_or_build("next_token/pretrained", key, build, machine_dependent=ctx.device)

    def evaluate(self, artifact, data: FederatedTextData, ctx: RunContext) -> dict[str, float]:
        if not data.test:
            raise EvaluationError("next_token: the dataset's test split is empty")
        start = time.perf_counter()
        model_dir = self.initial_model(data, ctx)
        if isinstance(artifact, TrainedModel):
            result = self._score_trained(Path(artifact.path), model_dir, data, ctx)
        elif isinstance(artifact, SyntheticTexts):
            key = {
                "evaluator": "next_token",
                "version": self.version,
                "model": model_dir.name,
                "data": data.fingerprint(),
                "options": config_dict(self.config),
                "bf16": self._bf16(ctx),
                "texts": texts_key(artifact.texts) if artifact.texts else None,
                "seed": ctx.seed if artifact.texts else None,
            }
            result = ctx.cache.json(
                "next_token/evaluations", key, lambda: self._evaluate_texts(tuple(artifact.texts), model_dir, data, ctx)
            )
        else:
            raise EvaluationError(f"next_token: cannot evaluate a {type(artifact).__name__}; "
                                  "expected SyntheticTexts or TrainedModel")
        result["details"]["wall_seconds"] = round(time.perf_counter() - start, 2)
        self._write_details(result["details"], ctx)
        ctx.log.info("next_token: accuracy %.4f (selected step %s)", result["metrics"]["accuracy"],
                     result["details"].get("selected_step"))
        return dict(result["metrics"])

    def validation_score(self, artifact, data: MethodData, ctx: RunContext) -> float:
        """Validation accuracy of what ``evaluate`` would score, without the test split: for
        ``SyntheticTexts`` the checkpoint its fine-tuning selects (same seed; cached alike),
        for a ``TrainedModel`` the model itself."""
        if not data.validation:
            raise EvaluationError("next_token: the dataset's validation split is empty")
        model_dir = self.initial_model(data, ctx)
        if isinstance(artifact, TrainedModel):
            model, tokenizer = self._load_trained(Path(artifact.path), model_dir, ctx)
            return self._score(model, self._pick_encoded(data.validation, "validation", tokenizer), tokenizer,
                               ctx)["accuracy"]
        if not isinstance(artifact, SyntheticTexts):
            raise EvaluationError(f"next_token: cannot score a {type(artifact).__name__}; "
                                  "expected SyntheticTexts or TrainedModel")
        texts = tuple(artifact.texts)
        key = {"evaluator": "next_token", "version": self.version, "model": model_dir.name,
               "validation": texts_key(tuple(data.validation)), "options": config_dict(self.config),
               "bf16": self._bf16(ctx), "texts": texts_key(texts) if texts else None,
               "seed": ctx.seed if texts else None}

        def score() -> dict:
            _, _, val, details = self._fine_tune(texts, model_dir, data, ctx)
            return {"validation_accuracy": val["accuracy"], "selected_step": details["selected_step"]}

        result = ctx.cache.json("next_token/validation_scores", key, score)
        ctx.log.info("next_token: validation accuracy %.4f of %d texts (selected step %s)",
                     result["validation_accuracy"], len(texts), result["selected_step"])
        return result["validation_accuracy"]

    # -- steps ---------------------------------------------------------------------------------

    def _bf16(self, ctx: RunContext) -> bool:
        """What the ``bf16`` option means on the run's device."""
        return use_bf16(self.config.bf16, ctx.device)

    def _pretrain(self, public: tuple[str, ...], folder: Path, ctx: RunContext) -> None:
        from dpbench.evaluation import lm

        c = self.config
        started = time.perf_counter()
        tokenizer = lm.train_tokenizer(public, c.vocab_size)
        model = lm.build_model(tokenizer, n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head,
                               max_length=c.max_length, seed=c.pretrain_seed)
        encoded = lm.encode_texts(tokenizer, public, c.max_length)
        if c.pretrain_steps:
            lm.train(model, encoded, pad_id=tokenizer.pad_token_id, steps=c.pretrain_steps,
                     batch_size=c.pretrain_batch_size, lr=c.pretrain_lr, seed=c.pretrain_seed,
                     schedule="cosine", warmup=min(c.pretrain_warmup, c.pretrain_steps),
                     bf16=self._bf16(ctx),
                     device=ctx.device,
                     steps_iter=lambda it: ctx.track(it, "next_token: pretrain on public", total=c.pretrain_steps))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_json(folder / "pretraining.json", {
            "public_texts": len(public), "seconds": round(time.perf_counter() - started, 1),
            "options": c.model_key(ctx.device),
        })

    def _load(self, model_dir: Path, ctx: RunContext):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(ctx.device)
        return model.eval(), tokenizer

    def _splits(self, data: FederatedTextData, tokenizer, ctx: RunContext):
        return (self._pick_encoded(data.validation, "validation", tokenizer),
                self._pick_encoded(data.test, "test", tokenizer))

    def _pick_encoded(self, texts: tuple[str, ...], split: str, tokenizer):
        """``texts`` encoded, at most ``max_eval_texts`` of them (a subset seeded by ``split``)."""
        from dpbench.evaluation import lm

        cap = self.config.max_eval_texts
        if cap is not None and len(texts) > cap:
            import numpy as np

            rng = np.random.default_rng(int(hashlib.sha256(split.encode()).hexdigest()[:8], 16))
            texts = [texts[i] for i in sorted(rng.choice(len(texts), cap, replace=False))]
        return lm.encode_texts(tokenizer, list(texts), self.config.max_length)

    def _score(self, model, encoded, tokenizer, ctx) -> dict[str, float]:
        from dpbench.evaluation import lm

        return lm.score(model, encoded, pad_id=tokenizer.pad_token_id, batch_size=self.config.eval_batch_size,
                        bf16=self._bf16(ctx), device=ctx.device)

    def _evaluate_texts(self, texts: tuple[str, ...], model_dir: Path, data, ctx: RunContext) -> dict:
        model, tokenizer, val, details = self._fine_tune(texts, model_dir, data, ctx)
        metrics = self._score(model, self._pick_encoded(data.test, "test", tokenizer), tokenizer, ctx)
        details.update(test_tokens=metrics.pop("tokens"), validation_tokens=val.get("tokens", 0))
        metrics["validation_accuracy"] = val.get("accuracy", float("nan"))
        return {"metrics": metrics, "details": details}

    def _fine_tune(self, texts: tuple[str, ...], model_dir: Path, data, ctx: RunContext):
        """Fine-tune on ``texts`` and select a checkpoint on validation (protocol steps 2–3):
        ``(model at the selected checkpoint, tokenizer, its validation scores, details)``."""
        from dpbench.evaluation import lm

        c = self.config
        model, tokenizer = self._load(model_dir, ctx)
        validation = self._pick_encoded(data.validation, "validation", tokenizer)
        details: dict = {"synthetic_texts": len(texts), "train_steps": 0 if not texts else c.train_steps,
                         "batch_size": c.batch_size}
        if not texts:
            val = self._score(model, validation, tokenizer, ctx) if validation else {}
            details.update(selected_step=0, curve=[[0, val.get("accuracy")]])
            return model, tokenizer, val, details
        encoded = lm.encode_texts(tokenizer, texts, c.max_length)
        curve: list[list] = []
        best = {"accuracy": -math.inf, "step": None, "state": None, "val": {}}
        checkpoints = set(c.candidate_steps())

        def consider(step: int, loss: float | None) -> None:
            if not validation:  # nothing to select on: keep the final model
                best.update(step=step)
                return
            val = self._score(model, validation, tokenizer, ctx)
            curve.append([step, val["accuracy"], None if loss is None else round(loss, 4)])
            if val["accuracy"] > best["accuracy"]:
                best.update(accuracy=val["accuracy"], step=step, val=val,
                            state={k: v.detach().clone() for k, v in model.state_dict().items()})

        consider(0, None)  # the pretrained model is a candidate

        def on_step(step: int, loss: float) -> None:
            if step in checkpoints:
                consider(step, loss)

        lm.train(model, encoded, pad_id=tokenizer.pad_token_id, steps=c.train_steps, batch_size=c.batch_size,
                 lr=c.lr, seed=ctx.seed_for("next_token/finetune"), schedule="constant",
                 bf16=self._bf16(ctx),
                 device=ctx.device, on_step=on_step,
                 steps_iter=lambda it: ctx.track(it, "next_token: fine-tune", total=c.train_steps))
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        details.update(selected_step=best["step"], curve=curve)
        return model, tokenizer, best["val"], details

    def _score_trained(self, path: Path, model_dir: Path, data, ctx: RunContext) -> dict:
        model, tokenizer = self._load_trained(path, model_dir, ctx)
        validation, test = self._splits(data, tokenizer, ctx)
        val = self._score(model, validation, tokenizer, ctx) if validation else {}
        metrics = self._score(model, test, tokenizer, ctx)
        details = {"trained_model": str(path), "selected_step": None,
                   "test_tokens": metrics.pop("tokens"), "validation_tokens": val.get("tokens", 0)}
        metrics["validation_accuracy"] = val.get("accuracy", float("nan"))
        return {"metrics": metrics, "details": details}

    def _load_trained(self, path: Path, model_dir: Path, ctx: RunContext):
        """A federated method's ``TrainedModel`` and the evaluator's tokenizer, checked to match."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (path / "config.json").is_file():
            raise EvaluationError(f"next_token: TrainedModel path {str(path)!r} is not a save_pretrained folder "
                                  "(no config.json); start from NextTokenEvaluator.initial_model")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(path)).to(ctx.device).eval()
        if model.config.vocab_size != len(tokenizer):
            raise EvaluationError(f"next_token: {path} has vocabulary size {model.config.vocab_size}, the "
                                  f"evaluator's tokenizer {len(tokenizer)}; train from initial_model()")
        return model, tokenizer

    def _write_details(self, details: dict, ctx: RunContext) -> None:
        try:
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(ctx.output_dir / "next_token.json", details)
        except OSError as err:  # details are a courtesy; never fail a run for them
            ctx.log.warning("next_token: could not write details: %s", err)


def _lib_versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


__all__ = ["NextTokenEvaluator", "NextTokenOptions", "EvaluationError"]
