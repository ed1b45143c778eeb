"""``dpbench privacy epsilon|calibrate`` and ``dpbench audit`` through click's CliRunner."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from dpbench.api import Method
from dpbench.api.privacy import MECHANISM_KINDS
from dpbench.errors import UnknownNameError
from dpbench.privacy import clipped_sum_mechanism
from dpbench.privacy.cli import MECHANISMS, audit, privacy

POPRI = ["--sampling-rate", "1", "--rounds", "20", "--delta", "3e-6"]


def invoke(command, args):
    return CliRunner().invoke(command, args, catch_exceptions=False)


def test_importing_the_cli_loads_no_numerics():
    code = ("import sys, dpbench.privacy.cli; "
            "heavy = [m for m in ('numpy', 'scipy', 'dp_accounting', 'opacus', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_mechanism_choices_match_the_api():
    assert MECHANISMS == MECHANISM_KINDS


def test_epsilon_popri_setting_every_accountant():
    out = invoke(privacy, ["epsilon", "--noise-multiplier", "19.3", *POPRI,
                           "--accountant", "rdp", "--accountant", "pld", "--accountant", "opacus"])
    assert out.exit_code == 0
    assert "ε of 20 gaussian releases at σ=19.3" in out.output
    lines = {line.split()[1]: line for line in out.output.splitlines() if line.startswith("│")}
    assert "0.997274" in lines["rdp"] and "0.997274" in lines["opacus"] and "0.919485" in lines["pld"]


def test_epsilon_edge_values():
    assert "∞ (non-private)" in invoke(privacy, ["epsilon", "--noise-multiplier", "0", *POPRI]).output
    out = invoke(privacy, ["epsilon", "--noise-multiplier", "1", "--sampling-rate", "0", "--rounds", "5",
                           "--delta", "1e-5"])
    assert "│ pld        │ 0 " in out.output


def test_epsilon_tree_aggregation():
    out = invoke(privacy, ["epsilon", "--noise-multiplier", "10", "--rounds", "2000", "--delta", "1e-6",
                           "--mechanism", "tree_aggregation", "--accountant", "rdp"])
    assert out.exit_code == 0 and "1.5494" in out.output


def test_epsilon_of_a_restarted_tree_composes_its_trees():
    """Two trees of 2,000 rounds at z = 10: twice one tree's RDP, i.e. one tree at z/√2."""
    from dpbench.privacy import compute_epsilon

    out = invoke(privacy, ["epsilon", "--noise-multiplier", "10", "--rounds", "4000", "--rounds-per-tree", "2000",
                           "--delta", "1e-6", "--mechanism", "tree_aggregation", "--accountant", "rdp"])
    assert out.exit_code == 0 and "4000 tree_aggregation releases (a tree every 2000)" in out.output
    twice = compute_epsilon(noise_multiplier=10 / 2**0.5, sampling_rate=1, rounds=2000, delta=1e-6,
                            mechanism="tree_aggregation", accountant="rdp")
    assert f"{twice:.6g}" in out.output


def test_calibrate_popri_setting():
    out = invoke(privacy, ["calibrate", "--epsilon", "1", *POPRI, "--accountant", "rdp", "--accountant", "pld"])
    assert out.exit_code == 0
    assert "σ for ε ≤ 1 over 20 gaussian releases" in out.output
    assert "19.252" in out.output and "17.864" in out.output


@pytest.mark.parametrize("args, field", [
    (["epsilon", "--noise-multiplier", "-1", *POPRI], "noise_multiplier"),
    (["epsilon", "--noise-multiplier", "1", "--sampling-rate", "1.5", "--rounds", "3", "--delta", "1e-5"],
     "sampling_rate"),
    (["epsilon", "--noise-multiplier", "1", "--rounds", "0", "--delta", "1e-5"], "rounds"),
    (["epsilon", "--noise-multiplier", "1", "--rounds", "3", "--delta", "2"], "delta"),
    (["calibrate", "--epsilon", "0", *POPRI], "epsilon"),
    (["calibrate", "--epsilon", "1", *POPRI, "--rounds-per-tree", "5"], "rounds_per_tree"),
])
def test_bad_values_fail_in_one_line_naming_the_field(args, field):
    out = invoke(privacy, args)
    assert out.exit_code == 1
    assert out.output.startswith(f"Error: {field}:") and "Traceback" not in out.output


def test_unknown_accountant_is_a_usage_error():
    out = invoke(privacy, ["epsilon", "--noise-multiplier", "1", *POPRI, "--accountant", "prv"])
    assert out.exit_code == 2 and "'pld', 'rdp', 'opacus'" in out.output


# ---- audit ----------------------------------------------------------------------------------


class Honest(Method):
    def run(self, data, ctx):
        raise NotImplementedError

    def audit_mechanism(self):
        return clipped_sum_mechanism(noise_multiplier=1.0)


class Unclipped(Honest):
    def audit_mechanism(self):
        def release(clients, rng):
            return np.sum(clients, axis=0) + rng.normal(0.0, 1.0, size=8)

        return dataclasses.replace(clipped_sum_mechanism(), release=release, name="unclipped sum")


class Silent(Honest):
    def audit_mechanism(self):
        return None


class FakeRegistry:
    methods = {"honest": Honest, "unclipped": Unclipped, "silent": Silent}

    def get(self, name, *, field=None):
        if name not in self.methods:
            raise UnknownNameError("method", name, self.methods, field=field)
        return self.methods[name]


@pytest.fixture
def registry(monkeypatch):
    import dpbench.plugins

    monkeypatch.setattr(dpbench.plugins, "get_registry", lambda kind: FakeRegistry())


def test_audit_honest_method(registry):
    out = invoke(audit, ["honest", "--trials", "1000"])
    assert out.exit_code == 0, out.output
    assert "Privacy audit of honest" in out.output and "ok: bound within the claim" in out.output
    assert "4.37718" in out.output  # claimed ε at σ=1, δ=1e-5


def test_audit_catches_a_bug_and_exits_nonzero(registry):
    out = invoke(audit, ["unclipped", "--trials", "2000"])
    assert out.exit_code == 1
    assert "VIOLATION" in out.output and "unclipped sum" in out.output


def test_audit_method_without_mechanism_fails_clearly(registry):
    out = invoke(audit, ["silent"])
    assert out.exit_code == 1
    assert "makes no noisy release to audit" in out.output


def test_audit_unknown_method(registry):
    out = invoke(audit, ["honset"])
    assert out.exit_code == 1
    assert "unknown method 'honset'" in out.output and "Did you mean 'honest'" in out.output
