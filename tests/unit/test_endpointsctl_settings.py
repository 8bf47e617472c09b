from dataclasses import replace

import pytest

from endpointsctl.settings import SETTINGS, from_args, parse_weights
from endpointsctl.subsetting.registry import DEFAULT_FILTERS, DEFAULT_WEIGHTS
from localsched.settings import SettingsError


def test_defaults_need_nothing_but_give_a_unique_identity_per_process() -> None:
    first = from_args([], env={})
    second = from_args([], env={})
    assert first.subsetting.config.algorithm == "least-loaded"
    assert dict(first.subsetting.config.weights) == dict(DEFAULT_WEIGHTS)
    assert first.subsetting.config.filters == DEFAULT_FILTERS
    assert first.server.admin_port == 9090
    assert first.leader.enabled
    assert first.leader.lease_name == "endpointsctl"
    assert first.leader.identity != second.leader.identity


def test_the_pod_namespace_is_where_the_lease_and_the_activators_are() -> None:
    settings = from_args([], env={"POD_NAMESPACE": "elsewhere", "POD_NAME": "endpointsctl-abc"})
    assert settings.leader.lease_namespace == "elsewhere"
    assert settings.sources.activator_namespace == "elsewhere"
    assert settings.leader.identity.startswith("endpointsctl-abc_")


def test_a_flag_wins_over_its_env_var() -> None:
    settings = from_args(["--max-node-selection", "4"], env={"LOCALSCHED_MAX_NODE_SELECTION": "3"})
    assert settings.subsetting.max_node_selection == 4


def test_weights_and_filters_come_from_env() -> None:
    env = {
        "LOCALSCHED_SUBSETTING_WEIGHTS": "Stickiness=5, ZoneSpread=2",
        "LOCALSCHED_SUBSETTING_FILTERS": "ActivatorReady",
        "LOCALSCHED_SUBSETTING_ALGORITHM": "someone-elses",
    }
    config = from_args([], env=env).subsetting.config
    assert dict(config.weights) == {"Stickiness": 5, "ZoneSpread": 2}
    assert config.filters == ("ActivatorReady",)
    assert config.algorithm == "someone-elses"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param({"LOCALSCHED_ADMIN_PORT": "0"}, "LOCALSCHED_ADMIN_PORT", id="port-out-of-range"),
        pytest.param({"LOCALSCHED_WORKERS": "many"}, "LOCALSCHED_WORKERS", id="workers-not-a-number"),
        pytest.param({"LOCALSCHED_MAX_NODE_SELECTION": "0"}, "LOCALSCHED_MAX_NODE_SELECTION", id="n-below-one"),
        pytest.param({"LOCALSCHED_RESYNC_SECONDS": "-1"}, "LOCALSCHED_RESYNC_SECONDS", id="negative-period"),
        pytest.param({"LOCALSCHED_LEADER_ELECT": "maybe"}, "LOCALSCHED_LEADER_ELECT", id="not-a-boolean"),
        pytest.param({"LOCALSCHED_SUBSETTING_WEIGHTS": "Stickiness"}, "LOCALSCHED_SUBSETTING_WEIGHTS",
                     id="weight-without-value"),
        pytest.param({"LOCALSCHED_SUBSETTING_WEIGHTS": "Nope=1"}, "LOCALSCHED_SUBSETTING_WEIGHTS",
                     id="unknown-scorer"),
        pytest.param({"LOCALSCHED_SUBSETTING_FILTERS": "Nope"}, "LOCALSCHED_SUBSETTING_FILTERS",
                     id="unknown-filter"),
        pytest.param({"LOCALSCHED_SUBSETTING_ALGORITHM": " "}, "LOCALSCHED_SUBSETTING_ALGORITHM",
                     id="empty-algorithm"),
        pytest.param({"LOCALSCHED_RENEW_DEADLINE_SECONDS": "20"}, "LOCALSCHED_RENEW_DEADLINE_SECONDS",
                     id="renew-deadline-beyond-the-lease"),
        pytest.param({"LOCALSCHED_RETRY_PERIOD_SECONDS": "12"}, "LOCALSCHED_RENEW_DEADLINE_SECONDS",
                     id="retry-period-beyond-the-renew-deadline"),
        pytest.param({"LOCALSCHED_LOG_LEVEL": "loud"}, "LOCALSCHED_LOG_LEVEL='loud' is invalid: one of DEBUG",
                     id="log-level"),
        pytest.param({"LOCALSCHED_LOG_FORMAT": "xml"}, "LOCALSCHED_LOG_FORMAT='xml' is invalid: one of text, json",
                     id="log-format"),
    ],
)  # fmt: skip
def test_a_bad_setting_fails_fast_naming_its_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        from_args([], env=env)


def test_log_format_is_a_choice_from_flag_or_env() -> None:
    assert from_args([], env={}).log_format == "text"
    assert from_args([], env={"LOCALSCHED_LOG_FORMAT": "Json"}).log_format == "json"
    assert from_args(["--log-format", "text"], env={"LOCALSCHED_LOG_FORMAT": "json"}).log_format == "text"


def test_a_bad_log_format_flag_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        from_args(["--log-format", "xml"], env={})
    assert exited.value.code == 2
    assert "--log-format: invalid choice: 'xml'" in capsys.readouterr().err


def test_every_documented_default_given_explicitly_changes_nothing() -> None:
    """The table's defaults (what --help, docs/configuration.md and manifests/config.yaml show) are the real ones:
    setting each to its shown default yields the settings of an empty environment (but for the random identity)."""
    explicit = {s.env: s.shown_default for s in SETTINGS}
    given, implied = from_args([], env=explicit), from_args([], env={})
    assert given.leader.identity.rpartition("_")[0] == implied.leader.identity.rpartition("_")[0]
    assert replace(given, leader=implied.leader) == implied


def test_a_bad_flag_is_named_as_the_flag() -> None:
    with pytest.raises(SettingsError, match="--subsetting-weights"):
        from_args(["--subsetting-weights", "LeastLoaded=-1"], env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("A=1,B=0", {"A": 1, "B": 0}, id="zero-disables"),
        pytest.param(" A = 2 , ", {"A": 2}, id="spaces-and-trailing-comma"),
        pytest.param("", {}, id="empty"),
    ],
)
def test_weights_parse_as_name_equals_whole_number(text: str, expected: dict[str, int]) -> None:
    assert parse_weights(text) == expected


@pytest.mark.parametrize("text", ["A", "A=", "=1", "A=1.5", "A=x", "A=1,A=2"])
def test_malformed_weights_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not Name=weight|given twice"):
        parse_weights(text)
