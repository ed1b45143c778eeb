"""``dpbench new method NAME``: a ready, installable method plugin package to start from."""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from dpbench.errors import ConfigError, DpbenchError

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "dpbench-$dist"
version = "0.1.0"
description = "$title, a dpbench method"
requires-python = ">=3.11"
dependencies = ["dpbench", "numpy"]

[project.entry-points.dpbench]
$name = "$package"

[tool.setuptools.packages.find]
include = ["$package*"]
"""

README = """\
# dpbench-$dist

A dpbench method plugin, `$name`. As generated it privately selects public texts: each sampled
client votes for the public texts closest to its own, and the noisy vote sum picks the output.
Replace `$package/method.py` with your method.

```bash
pip install -e .                 # registers `$name` through the `dpbench` entry-point group
python -m pytest tests           # the plugin contract: conformance, determinism, resume, release-only
dpbench show $name               # its options
```

In a suite: `methods: {$name: {num_texts: 256}}`.
"""

INIT = '''\
"""$title: registers the `$name` method with dpbench."""

from dpbench.api import hookimpl


@hookimpl
def register_methods(register):
    register("$name", "$package.method:$cls")
'''

METHOD = '''\
"""$title. What a dpbench method does, and must keep doing when you replace the algorithm:

- ``mechanism`` declares the noisy releases a run makes (how many, and the Poisson client
  sampling rate); the harness calibrates the noise to the suite's (ε, δ) from it.
- ``run`` reaches the clients' data only through ``ctx.privacy``: each release is one row per
  sampled client, clipped, summed, noised and ledgered by the session. All else is
  post-processing of releases and public data.
- Each client's row is a client step (``client_step``) that ``ctx.clients`` runs, in process
  or, under ``runtime: flower``, on the client's own Flower node.
- A run killed midway resumes: state goes through ``ctx.save_state`` / ``ctx.load_state``, and
  a release the session already made is replayed, not charged again.

As generated: each sampled client votes, with one unit-norm vector, for the public text that
shares most words with each of its texts; the noisy vote sums rank the public texts and the
top ``num_texts`` are the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpbench.api import MechanismSpec, Method, SyntheticTexts
from dpbench.api.config import check_fraction, check_int


@dataclass(frozen=True)
class ${cls}Options:
    rounds: int = 1
    """noisy releases; their votes are summed"""
    num_texts: int = 20
    """public texts returned"""
    sampling_rate: float = 1.0
    """Poisson client-sampling rate per round"""

    def __post_init__(self):
        check_int("rounds", self.rounds, minimum=1)
        check_int("num_texts", self.num_texts, minimum=1)
        check_fraction("sampling_rate", self.sampling_rate)


class $cls(Method):
    """$title: differentially private votes for the public texts nearest the clients' own."""

    config_class = ${cls}Options

    def mechanism(self, data):
        return MechanismSpec(rounds=self.config.rounds, sampling_rate=self.config.sampling_rate)

    def run(self, data, ctx):
        public = list(data.public)
        ctx.clients.place("texts", {client: {"texts": np.array(texts, dtype=str)}
                                    for client, texts in data.clients.items()})
        votes = np.zeros(len(public))
        for r in ctx.track(range(self.config.rounds), "$name rounds"):
            released = ctx.load_state(f"round{r}.json")
            if released is None:
                clients = ctx.privacy.cohort(r)
                rows = ctx.clients.rows("$package.method:client_step", clients, inputs="texts",
                                        payload={"public": np.array(public, dtype=str)}, batch=len(clients),
                                        width=len(public))
                noisy = ctx.privacy.release_clipped_sum(f"$name-round-{r}", rows, clip_norm=1.0, clients=clients)
                released = noisy.tolist()
                ctx.save_state(f"round{r}.json", released)
            votes += np.asarray(released)
            ctx.report(r, {"round": r, "top_vote": float(votes.max(initial=0.0))})  # followed live (wandb)
        best = np.argsort(-votes, kind="stable")[: self.config.num_texts]
        return SyntheticTexts(texts=tuple(public[i] for i in best))


def client_step(inputs, payload, configs) -> np.ndarray:
    """What each client computes (its row of a release), from its own ``texts`` and the public texts."""
    public_words = [set(text.split()) for text in payload["public"]]
    return np.array([client_vote(held["texts"], public_words) for held in inputs])


def client_vote(texts, public_words) -> np.ndarray:
    """One client's vote: for each of its texts, one vote for the public text sharing most
    words with it; scaled to norm 1, so the clipped sum's sensitivity is one client."""
    vote = np.zeros(len(public_words))
    for text in texts:
        own = set(text.split())
        vote[int(np.argmax([len(own & other) for other in public_words]))] += 1
    norm = np.linalg.norm(vote)
    return vote / norm if norm else vote
'''

TEST = '''\
"""`$name` keeps the dpbench method contract on the toy data: it declares its releases, makes
them through the session, is deterministic per seed, resumes after a kill with the same ledger
and output, and lets nothing but its releases depend on a client."""

from dpbench.testing import toy
from dpbench.testing.conformance import check_method

from $package.method import $cls, ${cls}Options, client_vote


def test_conforms(tmp_path):
    data = toy.ToyTexts(toy.ToyTextsOptions(num_clients=12)).load(None).for_method()
    assert check_method($cls(${cls}Options(rounds=2, num_texts=5)), data, folder=tmp_path) == []


def test_a_client_vote_has_norm_one_and_goes_to_the_nearest_public_text():
    vote = client_vote(["a b c", "a b c"], [{"x"}, {"a", "b"}, {"a"}])
    assert vote.tolist() == [0.0, 1.0, 0.0]
'''

FILES = {"pyproject.toml": PYPROJECT, "README.md": README, "$package/__init__.py": INIT,
         "$package/method.py": METHOD, "tests/test_$name.py": TEST}


def new_method(name: str, parent: Path) -> Path:
    """Write the plugin package ``dpbench-<name>`` into ``parent``; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ConfigError("NAME", name, "lower-case letters, digits and '_', starting with a letter "
                          "(it names the method in suites and the package dpbench_<name>)")
    values = {"name": name, "dist": name.replace("_", "-"), "package": f"dpbench_{name}",
              "cls": "".join(part.capitalize() for part in name.split("_")),
              "title": name.replace("_", " ").capitalize()}
    folder = Path(parent) / f"dpbench-{values['dist']}"
    if folder.exists():
        raise DpbenchError(f"{folder} exists already; choose another NAME or remove it")
    for relative, text in FILES.items():
        path = folder / Template(relative).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
    return folder
