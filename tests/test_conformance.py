"""``check_method`` passes the toy method and the three shipped methods at tiny sizes, and
catches planted toy variants that each break the contract one way."""

import numpy as np
import pytest

from dpbench.api import MechanismSpec
from dpbench.testing import toy
from dpbench.testing.conformance import check_method

CANARY = ("w39 w38 w37 w36 w35 w34 w33 w32",) * 3  # text the toy method can read
TOY = toy.NoisyUnigramOptions(rounds=3, num_texts=10)


@pytest.fixture(scope="module")
def toy_data():
    return toy.ToyTexts(toy.ToyTextsOptions(num_clients=12)).load(None).for_method()


def test_the_toy_method_conforms(toy_data, tmp_path):
    assert check_method(toy.NoisyUnigram(TOY), toy_data, folder=tmp_path, canary_texts=CANARY) == []


def test_popri_conforms(toy_data, tiny_llama, hashing_embedder, tmp_path):
    from dpbench_popri.config import PopriOptions
    from dpbench_popri.method import Popri

    method = Popri(PopriOptions(model=str(tiny_llama), rounds=2, prompts_per_round=4, samples_per_prompt=3,
                                reject_rank=2, max_new_tokens=8, truncate_tokens=8, final_samples=6, pairs_per_step=2,
                                epochs_per_round=1, lora_r=2, lora_alpha=4, max_length=128, generation_batch_size=8))
    assert check_method(method, toy_data, folder=tmp_path) == []


def test_pe_conforms(toy_data, tiny_llama, hashing_embedder, tmp_path):
    from dpbench_pe.config import PeOptions
    from dpbench_pe.method import PrivateEvolution

    method = PrivateEvolution(PeOptions(model=str(tiny_llama), iterations=2, synthetic_samples=4,
                                        variations_per_sample=1, max_new_tokens=8, truncate_tokens=8,
                                        generation_batch_size=8))
    assert check_method(method, toy_data, folder=tmp_path) == []


def test_pe_sft_conforms(toy_data, tiny_llama, hashing_embedder, tmp_path):
    from dpbench_pe.config import PeSftOptions
    from dpbench_pe.sft import PeSft

    method = PeSft(PeSftOptions(model=str(tiny_llama), iterations=2, synthetic_samples=4, variations_per_sample=1,
                                max_new_tokens=8, truncate_tokens=8, generation_batch_size=8, sft_epochs=1,
                                sft_batch_size=2, lora_r=2, lora_alpha=4, final_samples=5, bf16=False))
    assert check_method(method, toy_data, folder=tmp_path) == []


def test_dp_fedavg_conforms(toy_data, tiny_gpt2, tmp_path):
    from dpbench_dpfedavg.config import DpFedAvgOptions
    from dpbench_dpfedavg.method import DpFedAvg

    method = DpFedAvg(DpFedAvgOptions(rounds=2, clients_per_round=20, bf16=False))  # q = 1, with the canary too
    assert check_method(method, toy_data, folder=tmp_path, downstream=tiny_gpt2) == []


def test_dp_ftrl_conforms(toy_data, tiny_gpt2, tmp_path):
    from dpbench_dpfedavg.config import DpFtrlOptions
    from dpbench_dpfedavg.method import DpFtrl

    method = DpFtrl(DpFtrlOptions(rounds=3, clients_per_round=7, bf16=False))
    assert check_method(method, toy_data, folder=tmp_path, downstream=tiny_gpt2) == []


class DeclaresNothing(toy.NoisyUnigram):
    def mechanism(self, data):
        return None


class OneReleaseOver(toy.NoisyUnigram):
    """Declares one release fewer than it makes."""

    def mechanism(self, data):
        return MechanismSpec(rounds=self.config.rounds - 1, sampling_rate=self.config.sampling_rate)


class OneReleaseShort(toy.NoisyUnigram):
    """Declares one release more than it makes."""

    def mechanism(self, data):
        return MechanismSpec(rounds=self.config.rounds + 1, sampling_rate=self.config.sampling_rate)


class Unseeded(toy.NoisyUnigram):
    """Samples its output texts from an unseeded generator."""

    def run(self, data, ctx):
        ctx.rng = lambda stream: np.random.default_rng()
        return super().run(data, ctx)


class LogsCohort(toy.NoisyUnigram):
    """Logs the size of a round's cohort, which depends on every client."""

    def run(self, data, ctx):
        ctx.log.info("round 0 cohort: %d clients", len(ctx.privacy.cohort(0)))
        return super().run(data, ctx)


class HalvesRowsOnRerun(toy.NoisyUnigram):
    """Releases other rows in a rerun, as a method does that loses state in a kill."""

    def run(self, data, ctx):
        started = ctx.checkpoint_dir / "started"
        if started.exists():
            ctx.privacy = _HalvedRows(ctx.privacy)
        started.touch()
        return super().run(data, ctx)


class _HalvedRows:
    def __init__(self, session):
        self._session = session

    def __getattr__(self, name):
        return getattr(self._session, name)

    def release_clipped_sum(self, key, rows, **kwargs):
        return self._session.release_clipped_sum(key, rows / 2, **kwargs)


@pytest.mark.parametrize("method, expected", [
    pytest.param(DeclaresNothing, ["mechanism: mechanism(data) returned None, not a MechanismSpec"],
                 id="declares no mechanism"),
    pytest.param(OneReleaseOver, ["session: refused the method: PrivacyMisuseError: round_index 2: the mechanism "
                                  "declared 2 rounds"],
                 id="one release over"),
    pytest.param(OneReleaseShort, ["releases: made 3 releases through ctx.privacy; its MechanismSpec declares 4"],
                 id="one release short"),
    pytest.param(Unseeded, ["determinism: two runs with the same seed gave different output",
                            "resume: rerun after a kill, its output differs from an uninterrupted run's"],
                 id="unseeded"),
    pytest.param(HalvesRowsOnRerun, ["resume: rerun after a kill, its releases differ from an uninterrupted run's: "
                                     "other values (sha256) for ['round-1', 'round-2']",
                                     "resume: rerun after a kill, its output differs from an uninterrupted run's"],
                 id="state lost in a kill"),
    pytest.param(LogsCohort, ["release-only: <log>:1: 'round 0 cohort: 12 clients' becomes 'round 0 cohort: 13 "
                              "clients' with the canary client"],
                 id="logs its cohort size"),
])
def test_a_planted_breach_is_caught(toy_data, tmp_path, method, expected):
    assert check_method(method(TOY), toy_data, folder=tmp_path, canary_texts=CANARY) == expected
