"""``bf16: auto``: bfloat16 only where the device computes it natively."""

import pytest

from dpbench.api.config import check_bf16
from dpbench.errors import ConfigError
from dpbench.evaluation.next_token import NextTokenOptions
from dpbench.models import precision

ZEN2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t: avx512_bf16\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n"
NEOVERSE_V2 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """Point ``precision`` at a cpuinfo file with the given text (caches cleared around)."""

    def use(text: str | None):
        path = tmp_path / "cpuinfo"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", path)
        precision.cpuinfo.cache_clear()
        precision.native_bf16.cache_clear()

    yield use
    precision.cpuinfo.cache_clear()
    precision.native_bf16.cache_clear()


@pytest.mark.parametrize(("text", "native"), [(ZEN2, False), (SAPPHIRE_RAPIDS, True), (NEOVERSE_V2, True),
                                              (None, False)])
def test_native_bf16_reads_the_first_processors_flags(cpu, text, native):
    cpu(text)
    assert precision.native_bf16("cpu") is native


def test_cpuinfo_names_the_model(cpu):
    cpu(ZEN2)
    assert precision.cpuinfo()["model name"] == "AMD EPYC"
    assert "avx512_bf16" not in precision.cpu_flags()  # the second processor's line is not read


@pytest.mark.parametrize("text", [ZEN2, SAPPHIRE_RAPIDS])
def test_an_explicit_setting_wins_and_auto_follows_the_hardware(cpu, text):
    cpu(text)
    assert precision.use_bf16(True, "cpu") is True and precision.use_bf16(False, "cpu") is False
    assert precision.use_bf16("auto", "cpu") is (text == SAPPHIRE_RAPIDS)


def test_the_setting_is_true_false_or_auto():
    for value in (True, False, "auto"):
        check_bf16("bf16", value)
    for value in ("yes", 1, None, "Auto"):
        with pytest.raises(ConfigError, match="^bf16: .*true, false or auto"):
            check_bf16("bf16", value)


def test_the_evaluator_keys_its_model_on_what_auto_resolved_to(cpu):
    options = NextTokenOptions()
    assert options.bf16 == "auto"
    cpu(ZEN2)
    on_zen2 = options.model_key("cpu")
    cpu(SAPPHIRE_RAPIDS)
    on_spr = options.model_key("cpu")
    assert (on_zen2["bf16"], on_spr["bf16"]) == (False, True)
    assert NextTokenOptions(bf16=False).model_key("cpu") == on_zen2
