"""DP-FedAvg: user-level differentially private federated averaging.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models"
(ICLR 2018, arXiv 1710.06963). The method trains the evaluator's own downstream model
(``ctx.initial_model()``) and returns it as a ``TrainedModel``. Each round every client joins
independently with probability q (Poisson sampling by the privacy session); each participant
runs local SGD from the global weights on its own texts, tokenized exactly as the evaluator
does, and hands in its weight delta; the session clips every delta to L2 norm C, sums them and
adds N(0, (zC)²); the server divides by the configured expected cohort m̃ and takes a momentum step.

Deliberate choices:

- Local training is a client step (``client_step``), run in process or, under ``runtime:
  flower``, on each client's Flower node; Flower's own strategies and DP wrappers are not used:
  they sample a fixed-size cohort without replacement (a Poisson accountant would understate
  ε), weight clients by their number of examples (sensitivity no longer C/m̃) and noise after
  their server optimizers.
- The fixed denominator m̃ (``clients_per_round``, = qN whenever N ≥ m̃), not the realized
  cohort size nor N: under Poisson sampling this keeps the sensitivity of the average at C/m̃,
  and the update depends on the clients only through the release. The realized cohort, delta norms and clipping rates
  are never logged: only the noisy release leaves a round.
- Flat clipping of the final delta (sensitivity C), done by the session, one client's row at a
  time, so no clients × parameters matrix is ever built.
- Noise before the server optimizer: momentum only ever sees released values, so its state is
  post-processing.
- Monitoring on the validation split before the first round and after every round (no
  privacy cost); ``select: best_validation`` may return the initial model (checkpoint 0)
  when no noisy round beats it, as POPri may return its base generator; a checkpoint of the
  global weights and momentum after every round, so a killed run resumes at the next round and
  a round whose release is already ledgered replays it instead of training again. A round's
  stored release (model-sized) is discarded once the checkpoint after it is written; its ledger
  line and charge stay.
"""

from __future__ import annotations

import functools
import io
import shutil
from pathlib import Path

import numpy as np

from dpbench.api import (
    DpbenchError,
    MechanismSpec,
    Method,
    MethodData,
    RunContext,
    TrainedModel,
    read_sealed,
    write_json,
    write_sealed,
)
from dpbench_dpfedavg.config import DpFedAvgOptions, DpFtrlOptions

STATE_FILE = "dp_fedavg.pt"
CLIENT_INPUTS = "dp-fedavg-tokens"
"""each client's token ids (``token_arrays``), placed once with the client runtime"""


class DpFedAvg(Method):
    """DP-FedAvg as a dpbench method (see the module docstring)."""

    version = "1"
    citation = """\
@inproceedings{mcmahan2018learning,
  title = {Learning Differentially Private Recurrent Language Models},
  author = {McMahan, H. Brendan and Ramage, Daniel and Talwar, Kunal and Zhang, Li},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2018},
  eprint = {1710.06963},
  archivePrefix = {arXiv}
}
"""
    config_class = DpFedAvgOptions
    trains_downstream_model = True
    label = "DP-FedAvg"
    """in logs, progress and errors"""
    release_key = "dp-fedavg-round"
    """round r's release is ``f"{release_key}-{r}"``"""

    def mechanism(self, data: MethodData) -> MechanismSpec:
        return MechanismSpec(rounds=self.config.rounds, sampling_rate=self.sampling_rate(data.num_clients))

    def sampling_rate(self, num_clients: int) -> float:
        """q = m̃ / N, capped at 1."""
        return min(1.0, self.config.clients_per_round / num_clients)

    def run(self, data: MethodData, ctx: RunContext) -> TrainedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from dpbench.toolkit import encode_texts, score, use_bf16

        o = self.config
        bf16 = use_bf16(o.bf16, ctx.device)
        if o.select == "best_validation" and not data.validation:
            raise DpbenchError(f"{self.label}: select=best_validation needs a validation split, which is empty")
        source = ctx.initial_model()
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model = AutoModelForCausalLM.from_pretrained(str(source)).to(ctx.device).eval()
        params = list(model.parameters())
        max_length = model.config.max_position_embeddings  # the evaluator's max_length (GPT-2: n_positions)
        validation = encode_texts(tokenizer, data.validation, max_length)
        expected = o.clients_per_round  # m̃: public, never the realised cohort or N

        path = ctx.checkpoint_dir / STATE_FILE
        if path.exists():
            state = torch.load(io.BytesIO(read_sealed(path)), map_location=ctx.device, weights_only=True)
        else:
            weights = flat(params)
            state = {"next_round": 0, "weights": weights, "momentum": torch.zeros_like(weights),
                     "history": [], "best": None}
        weights = state["weights"]

        def monitor(checkpoint: int) -> None:
            """Validation metrics of the current weights as ``checkpoint`` (0: the initial model)."""
            assign(params, weights)
            metrics = score(model, validation, pad_id=tokenizer.pad_token_id, bf16=bf16, device=ctx.device)
            state["history"].append({"checkpoint": checkpoint, **metrics})
            ctx.report(checkpoint, state["history"][-1])
            ctx.log.info("%s checkpoint %d/%d: validation accuracy %.4f, cross-entropy %.4f", self.label,
                         checkpoint, o.rounds, metrics["accuracy"], metrics["cross_entropy"])
            best = state["best"]
            if o.select == "best_validation" and (best is None or metrics["accuracy"] > best["accuracy"]):
                state["best"] = {"checkpoint": checkpoint, "accuracy": metrics["accuracy"], "weights": weights}

        for checkpoint, entry in enumerate(state["history"]):  # resumed: the rounds made before
            ctx.report(checkpoint, entry)
        if validation and not state["history"]:
            monitor(0)

        ctx.clients.place(CLIENT_INPUTS, {cid: token_arrays(encode_texts(tokenizer, texts, max_length))
                                          for cid, texts in data.clients.items()})
        training = {"model": str(source), "device": ctx.device, "pad_id": tokenizer.pad_token_id,
                    "epochs": o.local_epochs, "batch_size": o.local_batch_size, "lr": o.local_lr, "bf16": bf16}

        for r in ctx.track(range(o.rounds), f"{self.label} rounds"):
            if r < state["next_round"]:
                continue
            participants = ctx.privacy.cohort(r)
            # one (1, d) float64 row θ_local − θ_global per participant, trained when the session asks
            rows = ctx.track(ctx.clients.rows(
                        "dpbench_dpfedavg.method:client_step", participants, inputs=CLIENT_INPUTS,
                        payload={"weights": weights.cpu().numpy()}, config=training,
                        client_config={cid: {"seed": ctx.seed_for(f"dp-fedavg-client-{r}-{cid}")}
                                       for cid in participants}, width=weights.numel()),
                        f"round {r + 1}/{o.rounds}: local training", total=len(participants) or None)
            key = f"{self.release_key}-{r}"
            noisy_sum = ctx.privacy.release_clipped_sum(key, rows, clip_norm=o.clip_norm,
                                                        clients=participants)
            if noisy_sum.shape != (weights.numel(),):
                raise DpbenchError(f"{self.label}: release {key} has shape {noisy_sum.shape}, the model "
                                   f"{weights.numel()} parameters; resume with the same model")
            average = torch.from_numpy(noisy_sum / expected).to(weights)
            state["momentum"] = o.server_momentum * state["momentum"] + average
            weights = state["weights"] = weights + o.server_lr * state["momentum"]
            if validation:
                monitor(r + 1)
            chosen = state["best"]["checkpoint"] if o.select == "best_validation" else r + 1
            write_json(ctx.checkpoint_dir / "monitor.json",  # before the state: a rerun rewrites it
                       {"select": o.select, "chosen_checkpoint": chosen, "history": state["history"]})
            state["next_round"] = r + 1
            save_atomic(state, path)
            ctx.privacy.discard_release(key)  # now in the checkpoint; model-sized on disk

        assign(params, state["best"]["weights"] if o.select == "best_validation" else weights)
        out = ctx.checkpoint_dir / "model"
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return TrainedModel(path=out)

    def audit_mechanism(self):
        """Each round's release for ``dpbench audit``: the shared clipped-sum path, since the
        deltas reach the session unprocessed."""
        from dpbench.toolkit import clipped_sum_mechanism

        return clipped_sum_mechanism(clip_norm=self.config.clip_norm, name="dp_fedavg round release")


class DpFtrl(DpFedAvg):
    """DP-FTRL: DP-FedAvg's client loop and server step on a tree-aggregated release.

    Kairouz, McMahan, Song, Thakkar, Thakurta, Xu, "Practical and Private (Deep) Learning
    without Sampling or Shuffling" (ICML 2021, arXiv 2103.00039). No sampling: the session puts
    each client in exactly one round of each tree (a tree is one pass over the clients) and
    noises each round's clipped sum with the increment of its tree's prefix noise, so the running
    sum of the updates carries the noise of ⌈log₂⌉ tree nodes rather than one draw per round.
    With ``rounds_per_tree`` the tree restarts as in the paper: training goes on from the current
    model, the new tree's prefix sums start from zero with fresh nodes, and ε composes the trees.
    The server's momentum step (the paper's DP-FTRLM) acts on the released increments only, so it
    is post-processing; it carries over a restart.
    """

    version = "2"
    citation = """\
@inproceedings{kairouz2021practical,
  title = {Practical and Private (Deep) Learning Without Sampling or Shuffling},
  author = {Kairouz, Peter and McMahan, Brendan and Song, Shuang and Thakkar, Om and Thakurta, Abhradeep and
            Xu, Zheng},
  booktitle = {Proceedings of the 38th International Conference on Machine Learning},
  series = {Proceedings of Machine Learning Research},
  volume = {139},
  year = {2021},
  eprint = {2103.00039},
  archivePrefix = {arXiv}
}
"""
    config_class = DpFtrlOptions
    label = "DP-FTRL"
    release_key = "dp-ftrl-round"

    def mechanism(self, data: MethodData) -> MechanismSpec:
        return MechanismSpec(rounds=self.config.rounds, kind="tree_aggregation",
                             rounds_per_tree=self.config.rounds_per_tree)

    def audit_mechanism(self):
        """A whole tree release (every round's clipped sum and prefix-noise increment) for
        ``dpbench audit``: one tree of 7 rounds, or two of 4 when the method restarts, with the
        score's direction learnt, since the rounds' noise is correlated."""
        from dpbench.toolkit import tree_aggregation_mechanism

        restarts = self.config.rounds_per_tree is not None
        return tree_aggregation_mechanism(clip_norm=self.config.clip_norm, rounds=8 if restarts else 7,
                                          rounds_per_tree=4 if restarts else None, name="dp_ftrl tree release")


def client_step(inputs, payload, configs) -> np.ndarray:
    """What each client computes in a round (the client runtime's step): θ_local − θ_global as a
    float64 row, after local SGD from ``payload["weights"]`` on its own token ids (``inputs[i]``,
    ``token_arrays``) with its own seed; the model architecture is loaded from ``configs[i]["model"]``."""
    import torch

    rows, weights = [], torch.from_numpy(payload["weights"]).to(configs[0]["device"])
    for held, config in zip(inputs, configs, strict=True):
        model = _client_model(config["model"], config["device"])
        encoded = [ids.tolist() for ids in np.split(held["ids"], np.cumsum(held["lengths"])[:-1])] if len(
            held["lengths"]) else []
        local = local_update(model, weights, encoded, pad_id=config["pad_id"], epochs=config["epochs"],
                             batch_size=config["batch_size"], lr=config["lr"], bf16=config["bf16"],
                             seed=config["seed"], device=config["device"])
        rows.append((local - weights).double().cpu().numpy())
    return np.vstack(rows)


def token_arrays(encoded: list[list[int]]) -> dict[str, np.ndarray]:
    """A client's token ids as the arrays a client runtime places: ``ids`` end to end and their ``lengths``."""
    return {"ids": np.array([i for ids in encoded for i in ids], dtype=np.int64),
            "lengths": np.array([len(ids) for ids in encoded], dtype=np.int64)}


@functools.lru_cache(maxsize=1)
def _client_model(path: str, device: str):
    """The model clients train, loaded once per process (``local_update`` sets all its weights)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).to(device).eval()


def local_update(model, weights, encoded, *, pad_id: int, epochs: int, batch_size: int, lr: float, seed: int,
                 bf16: bool = False, device: str = "cpu"):
    """One client's local training: plain SGD from the flat ``weights`` over ``epochs`` shuffled
    passes of ``encoded`` (mean token cross-entropy, padding masked); returns the flat local
    weights. Deterministic on CPU for a fixed ``seed`` (batch order and dropout)."""
    import torch

    from dpbench.toolkit import collate

    params = list(model.parameters())
    assign(params, weights)
    optimizer = torch.optim.SGD(params, lr=lr)
    order = np.random.default_rng(seed)
    model.train()
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in range(epochs):
            shuffled = order.permutation(len(encoded))
            for start in range(0, len(shuffled), batch_size):
                batch = collate([encoded[i] for i in shuffled[start:start + batch_size]], pad_id, device)
                with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 labels=batch.labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()
    return flat(params)


def flat(params):
    """The parameters as one new flat tensor."""
    import torch

    return torch.cat([p.detach().reshape(-1) for p in params])


def assign(params, weights) -> None:
    """Copy the flat ``weights`` into ``params`` (never aliasing them)."""
    import torch

    with torch.no_grad():
        start = 0
        for p in params:
            p.copy_(weights[start:start + p.numel()].view_as(p))
            start += p.numel()


def save_atomic(state: dict, path: Path) -> None:
    """``torch.save`` through the sealed atomic writer: a kill leaves the old or the new state,
    and a state changed on disk is refused on resume."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_sealed(path, buffer.getvalue())
