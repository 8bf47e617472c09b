"""Activator settings: flags over LOCALSCHED_* env over defaults, validated with the bad key named."""

from __future__ import annotations

import pytest

from activator.settings import SETTINGS, from_args
from localsched.settings import SettingsError


def test_defaults_need_only_the_node_name_from_the_downward_api() -> None:
    settings = from_args([], env={"NODE_NAME": "node-1", "POD_IP": "10.0.0.5"})
    assert (settings.identity.node_name, settings.identity.pod_ip) == ("node-1", "10.0.0.5")
    assert settings.local_scheduling is True
    assert settings.throttling.queue_limit == 1000


def test_a_flag_beats_the_environment() -> None:
    settings = from_args(["--queue-limit", "7"], env={"NODE_NAME": "n", "LOCALSCHED_QUEUE_LIMIT": "9"})
    assert settings.throttling.queue_limit == 7


def test_the_environment_sets_what_no_flag_does() -> None:
    env = {"NODE_NAME": "n", "LOCALSCHED_LOCAL_SCHEDULING": "false", "LOCALSCHED_CONNECT_TIMEOUT_SECONDS": "0.25"}
    settings = from_args([], env=env)
    assert settings.local_scheduling is False
    assert settings.forwarding.connect_timeout_seconds == 0.25


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        pytest.param([], {}, "NODE_NAME", id="node-name-missing"),
        pytest.param(["--queue-limit", "0"], {}, "--queue-limit='0'", id="queue-limit-zero"),
        pytest.param(["--port", "70000"], {}, "--port='70000'", id="port-out-of-range"),
        pytest.param([], {"LOCALSCHED_ACTIVATION_TIMEOUT_SECONDS": "-1"}, "ACTIVATION_TIMEOUT", id="negative-timeout"),
        pytest.param([], {"LOCALSCHED_LOCAL_SCHEDULING": "maybe"}, "LOCALSCHED_LOCAL_SCHEDULING", id="not-a-boolean"),
        pytest.param(["--max-attempts", "abc"], {}, "--max-attempts='abc'", id="not-a-number"),
        pytest.param([], {"LOCALSCHED_LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is invalid: one of DEBUG", id="log-level"),
        pytest.param(
            [],
            {"LOCALSCHED_LOG_FORMAT": "xml"},
            "LOCALSCHED_LOG_FORMAT='xml' is invalid: one of text, json",
            id="log-format",
        ),
        pytest.param([], {"LOCALSCHED_CLAIM_AT": "later"}, "LOCALSCHED_CLAIM_AT='later'", id="unknown-claim-at"),
    ],
)
def test_a_bad_setting_fails_fast_naming_the_key_and_value(argv: list[str], env: dict[str, str], named: str) -> None:
    env = {"NODE_NAME": "n", **env} if named != "NODE_NAME" else env
    with pytest.raises(SettingsError, match=named.replace("[", r"\[")):
        from_args(argv, env=env)


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        pytest.param([], {}, ("INFO", "text"), id="defaults"),
        pytest.param([], {"LOCALSCHED_LOG_LEVEL": "debug", "LOCALSCHED_LOG_FORMAT": "JSON"}, ("DEBUG", "json"),
                     id="env-in-any-case"),
        pytest.param(["--log-level", "warning", "--log-format", "json"], {"LOCALSCHED_LOG_FORMAT": "text"},
                     ("WARNING", "json"), id="flags-win"),
    ],
)  # fmt: skip
def test_log_level_and_format_are_choices_in_any_case(
    argv: list[str], env: dict[str, str], expected: tuple[str, str]
) -> None:
    settings = from_args(argv, env={"NODE_NAME": "n", **env})
    assert (settings.log_level, settings.log_format) == expected


def test_every_documented_default_given_explicitly_changes_nothing() -> None:
    """The table's defaults (what --help, docs/configuration.md and manifests/config.yaml show) are the real ones:
    setting each to its shown default yields the settings of an empty environment."""
    base = {"NODE_NAME": "n", "POD_IP": "10.0.0.5"}
    explicit = {s.env: s.shown_default for s in SETTINGS if not s.fallback_env}
    assert from_args([], env={**base, **explicit}) == from_args([], env=base)


def test_booleans_are_switches_with_a_no_form_and_flags_win_over_env() -> None:
    env = {"NODE_NAME": "n", "LOCALSCHED_LOCAL_SCHEDULING": "true"}
    assert from_args(["--no-local-scheduling"], env=env).local_scheduling is False
    assert from_args(["--local-scheduling"], env={"NODE_NAME": "n"}).local_scheduling is True


@pytest.mark.parametrize(
    ("argv", "said"),
    [(["--log-level", "loud"], "--log-level: invalid choice: 'loud'"),
     (["--log-format", "xml"], "--log-format: invalid choice: 'xml'"),
     (["--claim-at", "later"], "--claim-at: invalid choice: 'later'"),
     (["--local-scheduling", "false"], "unrecognized arguments: false")],
    ids=["log-level-not-a-choice", "log-format-not-a-choice", "claim-at-not-a-choice", "switch-given-a-value"],
)  # fmt: skip
def test_a_bad_flag_is_refused_by_the_parser(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        from_args(argv, env={"NODE_NAME": "n"})
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


def test_version_names_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        from_args(["--version"], env={})
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("activator 0.")
