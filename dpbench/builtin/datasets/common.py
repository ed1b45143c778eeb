"""What every built-in dataset shares: its common options and the pipeline that turns raw
clients into a split, truncated ``FederatedTextData``.

The pipeline, in order (each step documented on the option that controls it):

1. normalise whitespace (runs of spaces, tabs and newlines become one space);
2. drop texts under ``min_words`` whitespace-separated words;
3. keep the first ``max_texts_per_client`` texts of each client, in source order;
4. drop clients left with fewer than ``min_texts_per_client`` texts;
5. split *clients* (or client groups, e.g. all chunks of one address) into public, test,
   validation and training sets with ``split_seed`` — a text never lands in two splits;
6. keep ``num_clients`` training clients (a seeded subset), failing when fewer exist;
7. cap the validation/test/public splits at ``max_eval_texts`` / ``max_public_texts`` texts;
8. truncate every text to ``max_tokens`` tokens of ``tokenizer``;
9. plant ``canaries`` secret texts in training clients (off by default).

The result is cached in the shared cache (``runs/.cache``), keyed by the dataset, its version, its options and a
hash of the raw texts, so a suite reads and tokenizes its data once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dpbench.api.config import OMIT_AT_DEFAULT, check_fraction, check_int, config_dict
from dpbench.api.dataset import FederatedTextData
from dpbench.canaries import make_canaries, plant
from dpbench.errors import ConfigError, DataError

if TYPE_CHECKING:
    from dpbench.cache import SuiteCache

WHITESPACE_TOKENIZER = "whitespace"


@dataclass(frozen=True, kw_only=True)
class CommonOptions:
    """Options every built-in dataset accepts.

    ``max_tokens``: truncate every text (private, validation, test and public) to this many
    tokens, as the paper does (64). ``0`` keeps texts whole.
    ``tokenizer``: whose tokens ``max_tokens`` counts. Default: the generator's tokenizer
    (SmolLM2), so generated and real texts have the same length budget; ``"whitespace"``
    counts whitespace-separated words (no model needed); any model name or path the model
    resolver accepts also works.
    ``min_words``: drop texts with fewer whitespace-separated words (before truncation).
    ``max_texts_per_client``: keep only a client's first texts (source order); ``None``: all.
    ``min_texts_per_client``: drop clients with fewer texts after the filters above.
    ``num_clients``: use exactly this many training clients (a seeded random subset); fails
    when fewer are available. ``None``: all.
    ``test_fraction`` / ``validation_fraction``: shares of clients held out as the test split
    (only evaluators see it) and the validation split (model selection). Ignored for the test
    split when the source ships its own evaluation file.
    ``split_seed``: seeds the client split and every subset; independent of run seeds, so all
    runs of a suite see the same split.
    ``max_eval_texts`` / ``max_public_texts``: seeded caps on the size of each held-out split
    and of the public split (for fast smoke runs); ``None``: no cap.
    ``canaries``: append this many random secret texts (``dpbench.canaries.make_canaries``
    with ``split_seed``), one each to distinct training clients, after truncation, and list
    them in ``info["canaries"]``, so ``dpbench.canaries.canary_report`` can tell whether a
    method leaks private text. ``0`` (default): none, and no ``info`` entry.
    """

    max_tokens: int = 64
    tokenizer: str = "smollm2-135m-instruct"
    min_words: int = 1
    max_texts_per_client: int | None = None
    min_texts_per_client: int = 1
    num_clients: int | None = None
    test_fraction: float = 0.1
    validation_fraction: float = 0.1
    split_seed: int = 0
    max_eval_texts: int | None = None
    max_public_texts: int | None = None
    canaries: int = field(default=0, metadata=OMIT_AT_DEFAULT)

    def __post_init__(self):
        check_int("max_tokens", self.max_tokens, minimum=0)
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ConfigError("tokenizer", self.tokenizer, "'whitespace' or a model name or path")
        check_int("min_words", self.min_words, minimum=0)
        _check_optional_int("max_texts_per_client", self.max_texts_per_client, minimum=1)
        check_int("min_texts_per_client", self.min_texts_per_client, minimum=1)
        _check_optional_int("num_clients", self.num_clients, minimum=1)
        check_fraction("test_fraction", self.test_fraction, allow_zero=True, allow_one=False)
        check_fraction("validation_fraction", self.validation_fraction, allow_zero=True, allow_one=False)
        if self.test_fraction + self.validation_fraction >= 1:
            raise ConfigError(
                "validation_fraction",
                self.validation_fraction,
                f"a number below 1 - test_fraction = {1 - self.test_fraction:g} (some clients must train)",
            )
        check_int("split_seed", self.split_seed, minimum=0)
        _check_optional_int("max_eval_texts", self.max_eval_texts, minimum=1)
        _check_optional_int("max_public_texts", self.max_public_texts, minimum=1)
        check_int("canaries", self.canaries, minimum=0)


def _check_optional_int(name: str, value, *, minimum: int) -> None:
    if value is not None:
        check_int(name, value, minimum=minimum)


def check_public_fraction(value) -> None:
    check_fraction("public_fraction", value, allow_zero=True, allow_one=False)


@dataclass
class RawData:
    """What a source reads before the common pipeline runs.

    ``groups`` maps a client to the unit the split keeps together (sotu: the address a chunk
    came from); clients without an entry are their own group. ``test``/``validation``/``public``
    are texts the source provides as such (e.g. the paper's evaluation and initial-set files);
    ``public_fraction`` moves that share of client groups to the public split when the source
    has no public texts of its own.
    """

    clients: dict[str, list[str]]
    source: str
    groups: dict[str, str] = field(default_factory=dict)
    test: list[str] | None = None
    validation: list[str] | None = None
    public: list[str] | None = None
    public_fraction: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for part in (
            sorted(self.clients.items()),
            sorted(self.groups.items()),
            self.test,
            self.validation,
            self.public,
            self.public_fraction,
        ):
            digest.update(json.dumps(part, ensure_ascii=False).encode())
            digest.update(b"\x00")
        return digest.hexdigest()[:20]


def load_cached(
    dataset_name: str,
    version: str,
    options,
    read: Callable[[], RawData],
    cache: SuiteCache | None,
) -> FederatedTextData:
    """Read the raw data, then run the pipeline (or take its result from ``cache``)."""
    raw = read()
    if cache is None:
        return build(raw, options, dataset_name=dataset_name, version=version)
    key = {
        "dataset": dataset_name,
        "version": version,
        "options": config_dict(options),
        "raw": raw.content_hash(),
    }
    payload = cache.json(
        f"datasets/{dataset_name}",
        key,
        lambda: _to_json(build(raw, options, dataset_name=dataset_name, version=version)),
    )
    return _from_json(payload)


def _to_json(data: FederatedTextData) -> dict:
    return {
        "clients": {k: list(v) for k, v in data.clients.items()},
        "validation": list(data.validation),
        "public": list(data.public),
        "test": list(data.test),
        "info": dict(data.info),
    }


def _from_json(payload: dict) -> FederatedTextData:
    return FederatedTextData(
        clients={k: tuple(v) for k, v in payload["clients"].items()},
        validation=tuple(payload["validation"]),
        public=tuple(payload["public"]),
        test=tuple(payload["test"]),
        info=payload["info"],
    )


def normalize(text: str) -> str:
    return " ".join(text.split())


def build(raw: RawData, options: CommonOptions, *, dataset_name: str, version: str) -> FederatedTextData:
    """Run the common pipeline (module docstring) on ``raw``."""
    rng = np.random.default_rng(options.split_seed)
    dropped = {"short_texts": 0, "capped_texts": 0, "small_clients": 0}

    def clean(texts: Sequence[str]) -> list[str]:
        kept = []
        for text in texts:
            text = normalize(text)
            if len(text.split()) >= max(options.min_words, 1):
                kept.append(text)
            else:
                dropped["short_texts"] += 1
        return kept

    clients: dict[str, list[str]] = {}
    for cid in sorted(raw.clients):
        texts = clean(raw.clients[cid])
        if options.max_texts_per_client is not None and len(texts) > options.max_texts_per_client:
            dropped["capped_texts"] += len(texts) - options.max_texts_per_client
            texts = texts[: options.max_texts_per_client]
        if len(texts) < options.min_texts_per_client:
            dropped["small_clients"] += 1
            continue
        clients[cid] = texts

    groups: dict[str, list[str]] = {}
    for cid in clients:
        groups.setdefault(raw.groups.get(cid, cid), []).append(cid)
    order = sorted(groups)
    order = [order[i] for i in rng.permutation(len(order))]

    public = clean(raw.public) if raw.public is not None else None
    test = clean(raw.test) if raw.test is not None else None
    validation = clean(raw.validation) if raw.validation is not None else None
    counts = {
        "public": _share(len(order), raw.public_fraction) if public is None else 0,
        "test": _share(len(order), options.test_fraction) if test is None else 0,
        "validation": _share(len(order), options.validation_fraction) if validation is None else 0,
    }
    needed = sum(counts.values()) + 1
    if len(order) < needed:
        raise DataError(
            f"{raw.source}: {len(order)} client group(s) left after filtering (min_words="
            f"{options.min_words}, min_texts_per_client={options.min_texts_per_client}); the split "
            f"needs at least {needed} ({counts['public']} public, {counts['test']} test, "
            f"{counts['validation']} validation, 1 training)"
        )
    taken: dict[str, list[str]] = {}
    start = 0
    for split in ("public", "test", "validation"):
        taken[split] = order[start : start + counts[split]]
        start += counts[split]
    train_groups = order[start:]

    def texts_of(group_names: Sequence[str]) -> list[str]:
        return [t for g in sorted(group_names) for cid in groups[g] for t in clients[cid]]

    if public is None:
        public = texts_of(taken["public"])
    if test is None:
        test = texts_of(taken["test"])
    if validation is None:
        validation = texts_of(taken["validation"])
    train_ids = sorted(cid for g in train_groups for cid in groups[g])

    if options.num_clients is not None:
        if len(train_ids) < options.num_clients:
            raise DataError(
                f"{raw.source}: num_clients={options.num_clients} asked for, but only "
                f"{len(train_ids)} training clients are available after filtering and splitting"
            )
        pick = rng.choice(len(train_ids), size=options.num_clients, replace=False)
        train_ids = sorted(train_ids[i] for i in pick)

    test = _subset(test, options.max_eval_texts, rng)
    validation = _subset(validation, options.max_eval_texts, rng)
    public = _subset(public, options.max_public_texts, rng)
    for name, texts in (("test", test), ("validation", validation)):
        if not texts and (options.test_fraction if name == "test" else options.validation_fraction) > 0:
            raise DataError(f"{raw.source}: the {name} split is empty")

    truncate = make_truncator(options.tokenizer, options.max_tokens)
    train_clients = {cid: tuple(truncate(clients[cid])) for cid in train_ids}
    info = {
        "dataset": dataset_name,
        "version": version,
        "source": raw.source,
        "tokenizer": options.tokenizer,
        "max_tokens": options.max_tokens,
        "dropped": dropped,
        "split_groups": {k: len(v) for k, v in taken.items()} | {"train": len(train_groups)},
        **raw.info,
    }
    if options.canaries:
        info["canaries"] = make_canaries(options.canaries, seed=options.split_seed)
        train_clients = plant(train_clients, info["canaries"], seed=options.split_seed)
    return FederatedTextData(
        clients=train_clients,
        validation=tuple(truncate(validation)),
        public=tuple(truncate(public)),
        test=tuple(truncate(test)),
        info=info,
    )


def _share(n: int, fraction: float) -> int:
    """How many of ``n`` groups a fraction takes: at least one when the fraction is positive."""
    if fraction <= 0:
        return 0
    return max(1, math.floor(n * fraction + 0.5))


def _subset(texts: list[str], cap: int | None, rng: np.random.Generator) -> list[str]:
    if cap is None or len(texts) <= cap:
        return texts
    keep = np.sort(rng.choice(len(texts), size=cap, replace=False))
    return [texts[i] for i in keep]


# Truncation ---------------------------------------------------------------------------------

def make_truncator(tokenizer: str, max_tokens: int) -> Callable[[Sequence[str]], list[str]]:
    """A function cutting texts to their first ``max_tokens`` tokens of ``tokenizer``.

    With a model tokenizer the cut is made in the *original* string at the end offset of the
    last kept token, so the result is a prefix of the text (no decode round trip).
    """
    if max_tokens == 0:
        return list
    if tokenizer == WHITESPACE_TOKENIZER:
        return lambda texts: [" ".join(t.split()[:max_tokens]) for t in texts]
    from dpbench.models import load_tokenizer

    tok = load_tokenizer(tokenizer)

    def truncate(texts: Sequence[str]) -> list[str]:
        texts = list(texts)
        out = []
        for start in range(0, len(texts), 1024):
            chunk = texts[start : start + 1024]
            enc = tok(chunk, add_special_tokens=False, return_offsets_mapping=True)
            for text, offsets in zip(chunk, enc["offset_mapping"], strict=True):
                if len(offsets) <= max_tokens:
                    out.append(text)
                else:
                    out.append(text[: offsets[max_tokens - 1][1]].rstrip())
        return out

    return truncate


# Reading helpers shared by the file-based sources -------------------------------------------

def require_file(path: str | Path, option: str) -> Path:
    """``path`` as a ``Path``, failing unless it is an existing, non-empty file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{option}: file not found: {str(path)!r}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes) [{option}]")
    return path


def read_text(path: Path, option: str) -> str:
    """The file decoded as UTF-8; otherwise fails naming the line and column of the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: not UTF-8: byte 0x{data[err.start]:02x} at line {line}, column {err.start - line_start + 1} "
            f"(byte offset {err.start}) cannot be decoded; save the file as UTF-8 [{option}]"
        ) from None


def read_json(path: Path, option: str):
    try:
        return json.loads(read_text(path, option))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}) [{option}]") from None


def read_text_list(path: Path, option: str) -> list[str]:
    """A JSON list of strings (the paper's evaluation and initial-set files)."""
    value = read_json(path, option)
    if not isinstance(value, list):
        raise DataError(f"{path}: {option} must be a JSON list of strings, got {type(value).__name__}")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise DataError(f"{path}: {option}[{i}] must be a string, got {type(text).__name__}")
    return value


def read_client_file(path: Path, option: str) -> dict[str, list[str]]:
    """The paper's client file: a JSON object ``{client_id: [texts]}``."""
    value = read_json(path, option)
    if not isinstance(value, Mapping):
        raise DataError(f"{path}: {option} must be a JSON object {{client_id: [texts]}}, got {type(value).__name__}")
    clients = {}
    for cid, texts in value.items():
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{path}: client {cid!r} in {option} must map to a list of strings")
        if not texts:
            raise DataError(f"{path}: client {cid!r} in {option} has no texts (empty client)")
        clients[str(cid)] = texts
    if not clients:
        raise DataError(f"{path}: {option} has no clients")
    return clients

