import math

import pytest

from dpbench.errors import ConfigError, UnknownNameError
from dpbench.suite import compose, load_suite


def test_grid_expands_datasets_methods_epsilons_seeds(toy_plugin, toy_suite):
    suite = load_suite(toy_suite())
    # references run once per seed at their own ε; the DP method once per (ε, seed)
    cells = sorted((r.method.label, r.budget.label, r.seed) for r in suite.runs)
    assert cells == sorted([("public_only", "0", 0), ("public_only", "0", 1), ("nonprivate", "inf", 0),
                            ("nonprivate", "inf", 1), ("noisy_unigram", "1", 0), ("noisy_unigram", "1", 1),
                            ("noisy_unigram", "8", 0), ("noisy_unigram", "8", 1)])
    assert suite.name == "toy" and suite.metric == "accuracy"
    assert len({r.run_id for r in suite.runs}) == len(suite.runs)


def test_overrides_change_the_grid_and_plugin_options(toy_plugin, toy_suite):
    suite = load_suite(toy_suite(), ["privacy.epsilon=[2,4,6]", "seeds=1", "methods.noisy_unigram.rounds=5",
                                     "~methods.nonprivate"])
    methods = {r.method.label for r in suite.runs}
    assert methods == {"public_only", "noisy_unigram"}
    dp = [r for r in suite.runs if r.method.label == "noisy_unigram"]
    assert sorted(r.epsilon for r in dp) == [2.0, 4.0, 6.0]
    assert all(r.method.options["rounds"] == 5 for r in dp)
    # defaults are resolved into the spec, so the recorded config reproduces the run
    assert dp[0].method.options == {"rounds": 5, "sampling_rate": 1.0, "num_texts": 50, "round_seconds": 0.0}


def test_run_ids_are_stable_and_track_options(toy_plugin, toy_suite):
    path = toy_suite()
    first = {r.run_id for r in load_suite(path).runs}
    assert first == {r.run_id for r in load_suite(path).runs}
    changed = {r.run_id for r in load_suite(path, ["methods.noisy_unigram.rounds=4"]).runs}
    assert {i for i in first if "noisy_unigram" not in i} == {i for i in changed if "noisy_unigram" not in i}
    assert not {i for i in first if "noisy_unigram" in i} & changed


def test_labels_let_one_plugin_appear_twice(toy_plugin, toy_suite):
    suite = load_suite(toy_suite(), ["+methods.unigram_r1={plugin: noisy_unigram, rounds: 1}"])
    labels = {r.method.label: r.method.plugin for r in suite.runs}
    assert labels["unigram_r1"] == "noisy_unigram" and labels["noisy_unigram"] == "noisy_unigram"


CLAIMED = "+methods.other={plugin: noisy_unigram, rounds: 1}"


def test_claims_are_orderings_of_the_suite_s_private_methods_and_change_no_run(toy_plugin, toy_suite):
    plain = load_suite(toy_suite(), [CLAIMED, "+methods.third={plugin: noisy_unigram, rounds: 2}"])
    claimed = load_suite(toy_suite(), [CLAIMED, "+methods.third={plugin: noisy_unigram, rounds: 2}",
                                       "+leaderboard.claims=[{epsilon: 8, order: [noisy_unigram, [other, third]], "
                                       "source: a paper}]"])
    (claim,) = claimed.claims
    assert (claim.epsilon, claim.order, claim.source) == (8.0, (("noisy_unigram",), ("other", "third")), "a paper")
    assert claim.pairs() == [("noisy_unigram", "other"), ("noisy_unigram", "third")]  # no claim inside a tie
    assert [r.run_id for r in claimed.runs] == [r.run_id for r in plain.runs] and plain.claims == ()


@pytest.mark.parametrize("claim, field, fragment", [
    ("{epsilon: 8, order: [noisy_unigram, othre], source: s}", "leaderboard.claims[0].order", "Did you mean 'other'"),
    ("{epsilon: 8, order: [noisy_unigram, public_only], source: s}", "leaderboard.claims[0].order",
     "a private method of the suite"),
    ("{epsilon: 8, order: [noisy_unigram, [other, noisy_unigram]], source: s}", "leaderboard.claims[0].order",
     "each method once"),
    ("{epsilon: 8, order: [other], source: s}", "leaderboard.claims[0].order", "at least two"),
    ("{epsilon: 0, order: [noisy_unigram, other], source: s}", "leaderboard.claims[0].epsilon", "a number > 0"),
    ("{epsilon: 8, order: [noisy_unigram, other]}", "leaderboard.claims[0].source", "where the claim comes from"),
    ("{epsilon: 8, order: [noisy_unigram, other], source: s, sign: 1}", "leaderboard.claims[0].sign",
     "one of epsilon, order, source"),
])
def test_a_claim_s_errors_name_its_field(toy_plugin, toy_suite, claim, field, fragment):
    with pytest.raises(ConfigError) as err:
        load_suite(toy_suite(), [CLAIMED, f"+leaderboard.claims=[{claim}]"])
    assert str(err.value).startswith(field + ":") and fragment in str(err.value), str(err.value)


@pytest.mark.parametrize("overrides, field, fragment", [
    (["+methods.popri_typo={}"], "methods.popri_typo", "unknown method"),
    (["methods.noisy_unigram.rounds=0"], "methods.noisy_unigram.rounds", "an integer >= 1"),
    (["methods.noisy_unigram.round=3"], "methods.noisy_unigram.round", "Did you mean 'rounds'"),
    (["privacy.epsilon=-1"], "privacy.epsilon", "a number > 0"),
    (["privacy.epsilon=[1,1]"], "privacy.epsilon", "distinct"),
    (["privacy.delta=2"], "privacy.delta", "a number in (0, 1)"),
    (["privacy.accountant=rpd"], "privacy.accountant", "Did you mean 'rdp'"),
    (["seeds=0"], "seeds", "a count >= 1"),
    (["+sedes=3"], "sedes", "Did you mean 'seeds'"),
    (["device=tpu"], "device", "one of cpu, cuda, auto"),
    (["+leaderboard.metric=acuracy"], "leaderboard.metric", "Did you mean 'accuracy'"),
])
def test_validation_errors_name_field_value_and_allowed(toy_plugin, toy_suite, overrides, field, fragment):
    with pytest.raises((ConfigError, UnknownNameError)) as err:
        load_suite(toy_suite(), overrides)
    message = str(err.value)
    assert message.startswith(field + ":"), message
    assert fragment in message


def test_unknown_dataset_did_you_mean(toy_plugin, toy_suite):
    path = toy_suite("""
        privacy: {epsilon: 1, delta: 1e-5}
        datasets: {toy_text: {}}
        methods: {public_only: {}}
        evaluators: {next_word: {}}
    """)
    with pytest.raises(UnknownNameError,
                       match="datasets.toy_text: unknown dataset 'toy_text'. Did you mean 'toy_texts'"):
        load_suite(path)


def test_missing_sections_are_named(toy_plugin, toy_suite):
    path = toy_suite("""
        privacy: {epsilon: 1, delta: 1e-5}
        datasets: {toy_texts: {}}
        evaluators: {next_word: {}}
    """)
    with pytest.raises(ConfigError, match="^methods: None is not allowed; expected a non-empty mapping"):
        load_suite(path)


def test_private_methods_need_an_epsilon(toy_plugin, toy_suite):
    path = toy_suite("""
        privacy: {delta: 1e-5}
        datasets: {toy_texts: {}}
        methods: {noisy_unigram: {}}
        evaluators: {next_word: {}}
    """)
    with pytest.raises(ConfigError, match="privacy.epsilon.*noisy_unigram need a budget"):
        load_suite(path)


def test_references_alone_need_no_epsilon(toy_plugin, toy_suite):
    path = toy_suite("""
        privacy: {delta: 1e-5}
        datasets: {toy_texts: {}}
        methods: {public_only: {}, nonprivate: {}}
        evaluators: {next_word: {}}
    """)
    assert sorted(r.epsilon for r in load_suite(path).runs) == [0.0, math.inf]


def test_bad_hydra_syntax_and_missing_file(tmp_path, toy_suite):
    with pytest.raises(ConfigError, match="^overrides:"):
        compose(toy_suite(), ["privacy.epsilon=[1,"])
    with pytest.raises(ConfigError, match="an existing suite file"):
        compose(tmp_path / "nope.yaml")


def test_defaults_lists_compose_groups(tmp_path, toy_plugin):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "unigram.yaml").write_text("# @package methods\nnoisy_unigram: {rounds: 2}\n")
    (tmp_path / "s.yaml").write_text(
        "defaults:\n  - method: unigram\n  - _self_\nprivacy: {epsilon: 3, delta: 1e-5}\n"
        "datasets: {toy_texts: {}}\nevaluators: {next_word: {}}\n")
    suite = load_suite(tmp_path / "s.yaml", ["methods.noisy_unigram.rounds=7"])
    assert [r.method.options["rounds"] for r in suite.runs] == [7]


SECRETS_ADVICE = "secrets belong in the environment (wandb reads WANDB_API_KEY itself)"


def test_env_resolver_in_the_suite_is_refused(toy_plugin, toy_suite):
    path = toy_suite("""
        privacy: {epsilon: 1, delta: 1e-5}
        datasets: {toy_texts: {}}
        methods: {public_only: {}}
        evaluators: {next_word: {}}
        publish: {wandb: false, project: "${oc.env:HOME}"}
    """)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(err.value).startswith("publish.project: '${oc.env:HOME}' is not allowed")
    assert SECRETS_ADVICE in str(err.value)


@pytest.mark.parametrize("override, field", [
    ("+publish.project=${oc.env:HOME}", "publish.project"),
    ("privacy.epsilon=[1,${oc.decode:'8'}]", "privacy.epsilon[1]"),
    ("methods.noisy_unigram.rounds=${oc.env:HOME}", "methods.noisy_unigram.rounds"),
])
def test_resolvers_in_overrides_are_refused(toy_plugin, toy_suite, override, field):
    with pytest.raises(ConfigError) as err:
        load_suite(toy_suite(), [override])
    assert str(err.value).startswith(f"{field}: ")
    assert SECRETS_ADVICE in str(err.value)


def test_resolvers_in_files_pulled_by_defaults_are_refused(tmp_path, toy_plugin, monkeypatch):
    monkeypatch.setenv("DPBENCH_TEST_METHOD", "unigram")
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "unigram.yaml").write_text("# @package methods\nnoisy_unigram: {rounds: '${oc.env:HOME}'}\n")
    body = ("privacy: {epsilon: 3, delta: 1e-5}\ndatasets: {toy_texts: {}}\nevaluators: {next_word: {}}\n")
    (tmp_path / "s.yaml").write_text("defaults:\n  - method: unigram\n  - _self_\n" + body)
    with pytest.raises(ConfigError, match=r"^methods\.noisy_unigram\.rounds: '\$\{oc\.env:HOME\}' is not allowed"):
        load_suite(tmp_path / "s.yaml")
    (tmp_path / "method" / "unigram.yaml").write_text("# @package methods\nnoisy_unigram: {rounds: 2}\n")
    (tmp_path / "t.yaml").write_text("defaults:\n  - method: ${oc.env:DPBENCH_TEST_METHOD}\n  - _self_\n" + body)
    with pytest.raises(ConfigError, match=r"t\.yaml: defaults\[0\]\.method: '\$\{oc\.env:DPBENCH_TEST_METHOD\}'"):
        load_suite(tmp_path / "t.yaml")


def test_plain_references_and_escapes_are_kept(toy_plugin, toy_suite):
    path = toy_suite("""
        privacy: {epsilon: 1, delta: 1e-5}
        datasets: {toy_texts: {}}
        methods: {noisy_unigram: {rounds: 2}, public_only: {}}
        evaluators: {next_word: {}}
        publish: {wandb: false, project: "\\\\${oc.env:HOME}"}
    """)
    suite = load_suite(path, ["methods.noisy_unigram.num_texts=${methods.noisy_unigram.rounds}"])
    assert {r.method.options.get("num_texts") for r in suite.runs if r.method.label == "noisy_unigram"} == {2}
    assert suite.config["publish"]["project"] == "${oc.env:HOME}"


def test_a_reference_to_a_missing_key_names_the_key(toy_plugin, toy_suite):
    with pytest.raises(ConfigError, match=r"^methods\.noisy_unigram\.rounds: '\$\{nope\}' is not allowed; "
                                          r"expected an interpolation that resolves"):
        load_suite(toy_suite(), ["methods.noisy_unigram.rounds=${nope}"])
