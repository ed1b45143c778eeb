import pytest

from dpbench.api import Method, SyntheticTexts
from dpbench.errors import UnknownNameError
from dpbench.registry import RegistrationError, Registry


class Echo(Method):
    def run(self, data, ctx):
        return SyntheticTexts(texts=())


def test_register_and_get_class():
    registry = Registry("method", Method)
    registry.register("echo", Echo, plugin="p1")
    assert registry.get("echo") is Echo
    assert registry.origin("echo") == "p1"
    assert registry.names() == ["echo"]


def test_lazy_target_is_imported_on_first_get():
    registry = Registry("method", Method)
    registry.register("ref", "dpbench.builtin.references:PublicOnly", plugin="p")
    from dpbench.builtin.references import PublicOnly

    assert registry.get("ref") is PublicOnly


def test_lazy_target_with_wrong_base_fails_on_get():
    registry = Registry("method", Method)
    registry.register("bad", "dpbench.cache:SuiteCache", plugin="p")
    with pytest.raises(RegistrationError, match="must be a subclass of dpbench.api.method.Method"):
        registry.get("bad")


def test_duplicate_names_both_origins():
    registry = Registry("method", Method)
    registry.register("echo", Echo, plugin="first")
    with pytest.raises(RegistrationError, match="registered twice: by plugin 'first'.*by plugin 'second'"):
        registry.register("echo", Echo, plugin="second")


def test_wrong_base_class_is_refused_at_registration():
    registry = Registry("method", Method)
    with pytest.raises(RegistrationError, match="plugin 'p': method 'x' must be a subclass"):
        registry.register("x", dict, plugin="p")


def test_bad_names_are_refused():
    registry = Registry("method", Method)
    with pytest.raises(RegistrationError, match="name 'a b'"):
        registry.register("a b", Echo)
    with pytest.raises(RegistrationError, match="module:attr"):
        registry.register("lazy", "no_colon_here")


def test_unknown_name_did_you_mean():
    registry = Registry("method", Method)
    registry.register("popri", Echo)
    registry.register("private_evolution", Echo)
    with pytest.raises(UnknownNameError) as err:
        registry.get("popry", field="methods.popry")
    message = str(err.value)
    assert "methods.popry: unknown method 'popry'" in message
    assert "Did you mean 'popri'?" in message
    assert "Available: popri, private_evolution." in message


def test_unknown_name_without_close_match_lists_available():
    registry = Registry("dataset", Method)
    registry.register("sotu", Echo)
    message = str(pytest.raises(UnknownNameError, registry.get, "zzz").value)
    assert "Did you mean" not in message and "Available: sotu." in message
